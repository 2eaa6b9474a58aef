"""`activeseg status` says which augmentation preset training uses (activeseg.orchestration.status)."""

from types import SimpleNamespace

from activeseg.core.config import load_config
from activeseg.orchestration.status import augment_preset


def test_a_set_preset_and_an_auto_one_detected_from_the_data(tiny_dataset):
    ws = SimpleNamespace(cfg=load_config(None, ["train.augment.preset=em"]), dataset=tiny_dataset)
    assert augment_preset(ws) == {"preset": "em", "reason": "train.augment.preset in params.yaml"}
    ws.cfg = load_config(None, ["train.augment.preset=auto"])
    assert augment_preset(ws) == {"preset": "histology", "reason": "auto: 9 of 10 images look histology"}  # 1 darkfield
