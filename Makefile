# activeseg: `make demo` and `make test` do all the set-up on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1

.PHONY: demo test venv clean labelstudio-venv chromium

venv: $(STAMP)

# torch first, by its exact version, so that pip takes the local CPU wheel and never a CUDA build.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# Label Studio for the live-loop test (tests/workspace/test_labelstudio_live.py): its own environment,
# because label-studio==1.23.2 pins Django and pytz versions the project's environment cannot share.
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed

labelstudio-venv: $(LS_STAMP)

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || python3 -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==1.23.2
	touch $(LS_STAMP)

# Headless Chromium for the report's browser test (tests/report/test_browser.py): Debian's package.
chromium:
	test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q --no-install-recommends chromium)

demo: $(STAMP)
	$(VENV)/bin/activeseg demo

test: $(STAMP) chromium
	$(PY) -m pytest

# The services of infra/docker-compose.yml started natively on 127.0.0.1, all their data in one folder:
# .lab/ (or LAB_DIR=..., or $$ACTIVESEG_LAB_DIR); see infra/README.md, "The lab stack without Docker".
# Debian's PostgreSQL server is installed first when its initdb is not found.
.PHONY: lab lab-stop lab-deps
lab: $(STAMP) lab-deps
	$(PY) infra/lab/stack.py $(if $(LAB_DIR),--dir $(LAB_DIR)) start

lab-deps: $(STAMP)
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| (apt-get update -q && apt-get install -y -q --no-install-recommends postgresql)

lab-stop:
	@if [ -x $(PY) ]; then $(PY) infra/lab/stack.py $(if $(LAB_DIR),--dir $(LAB_DIR)) stop; \
	else echo "no $(VENV): no lab stack to stop"; fi

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache demo-output
