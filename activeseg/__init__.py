"""activeseg: active learning for biomedical image segmentation.

Importing the package turns telemetry off for this process and the processes it starts.
"""

import os

for _key, _value in {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}.items():
    os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
