"""When a campaign stops. The rules (checked before every round; the first that holds ends it):

- rounds: the last round is done (``rounds`` in params, the campaign's total; ``activeseg campaign run
  --rounds N``: N more rounds);
- label budget: ``campaign.budget_pixels`` pixels, or ``campaign.budget_fraction`` of the training pool,
  are labeled (the initial set included);
- Dice plateau: over the last ``campaign.plateau_rounds`` rounds the best Dice gained less than
  ``campaign.plateau_delta`` on the best of the rounds before; the Dice is the test Dice of each evaluated
  round, or with ``campaign.plateau_on: control`` the control estimate of the model's Dice on the unlabeled
  pool of each round whose labels landed with controls (:mod:`activeseg.loop.control`).
"""

from __future__ import annotations

from activeseg.core.config import CampaignConfig

PLATEAU_DICE = {"test": "test Dice", "control": "control estimate of the pool Dice"}
"""What the plateau rule reads, in words, per ``campaign.plateau_on``."""


def stop_rule(rules: CampaignConfig, next_round: int, last_round: int, revealed_pixels: int, pool_pixels: int,
              dice: list[float]) -> str | None:
    """Why the campaign stops before ``next_round``, or None to go on.

    ``dice``: the Dice ``rules.plateau_on`` names of every finished round, in order (test Dice, or the
    control estimate on the pool). Plateau: with p = ``rules.plateau_rounds`` > 0 and more than p rounds
    done, stop when max(last p) - max(before them) < ``rules.plateau_delta``.
    """
    if next_round > last_round:
        return f"round limit: round {last_round} was the last"
    if rules.budget_pixels is not None and revealed_pixels >= rules.budget_pixels:
        return f"label budget: {revealed_pixels} pixels labeled, budget {rules.budget_pixels}"
    if rules.budget_fraction is not None and revealed_pixels >= rules.budget_fraction * pool_pixels:
        return (f"label budget: {revealed_pixels / pool_pixels:.1%} of the training pool labeled, "
                f"budget {rules.budget_fraction:.1%}")
    p = rules.plateau_rounds
    if p and len(dice) > p:
        recent, before = max(dice[-p:]), max(dice[:-p])
        if recent - before < rules.plateau_delta:
            what = PLATEAU_DICE[rules.plateau_on]
            return (f"Dice plateau: best {what} of the last {p} rounds {recent:.4f} gained {recent - before:+.4f} "
                    f"on {before:.4f}, less than {rules.plateau_delta}")
    return None
