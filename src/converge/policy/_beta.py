"""The pure core of trust: a beta reputation per agent.

As data and functions of time.

An agent's reputation is a beta distribution ``Beta(alpha, beta)``: ``alpha`` counts evidence of
good behaviour, ``beta`` evidence of bad, both starting from a prior. The score is the mean,
``alpha / (alpha + beta)``. Evidence fades: the part of ``alpha`` and ``beta`` beyond the prior
halves every ``half_life_s`` seconds, so an agent that stops working drifts back to the prior and
old behaviour counts less than recent behaviour.

A record does not remember the prior it started from: decay pulls it toward the prior of the
policy in use, so changing the prior re-bases every agent gradually, never by rewriting records.

Nothing here reads a clock or a store: every function takes the time it should use and returns a
new record. ``converge.policy.trust.TrustModel`` drives these functions against a ``Store``.
"""

from __future__ import annotations

import enum
import math

import msgspec

from converge.errors import ValidationError

__all__ = [
    "Outcome",
    "TrustPolicy",
    "TrustRecord",
    "TrustWeights",
    "decay_trust",
    "parse_outcome",
    "prior_trust",
    "update_trust",
]

DEFAULT_HALF_LIFE_S = 7 * 24 * 3600.0
"""Seven days."""


class Outcome(enum.StrEnum):
    """What came of a piece of work an agent took on."""

    SUCCESS = "success"
    """Done as agreed: evidence for the agent."""
    FAILURE = "failure"
    """Reported as failed, or rejected: evidence against it."""
    TIMEOUT = "timeout"
    """Never reported (a lease expired, a deadline passed): evidence against it, by default
    heavier than a failure, since the agent also held the work up."""


def parse_outcome(value: object) -> Outcome:
    """Return ``value`` as an ``Outcome``; it may be one, or its string value (``"success"``).

    Raises:
        ValidationError: anything else (``field="outcome"``).
    """
    if isinstance(value, Outcome):
        return value
    if isinstance(value, str):
        try:
            return Outcome(value)
        except ValueError:
            pass
    choices = ", ".join(repr(o.value) for o in Outcome)
    raise ValidationError(f"outcome must be one of {choices}, not {value!r}", field="outcome")


class TrustWeights(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How much evidence one outcome of weight 1 adds.

    Raises:
        ValidationError: a weight that is negative or not a finite number (``field`` names it).
    """

    success: float = 1.0
    """Added to ``alpha`` per success."""
    failure: float = 1.0
    """Added to ``beta`` per failure."""
    timeout: float = 1.5
    """Added to ``beta`` per timeout."""

    def __post_init__(self) -> None:
        for name in ("success", "failure", "timeout"):
            check_number(getattr(self, name), f"weights.{name}", minimum=0.0)

    def for_outcome(self, outcome: Outcome) -> float:
        """The weight of ``outcome``."""
        if outcome is Outcome.SUCCESS:
            return self.success
        return self.failure if outcome is Outcome.FAILURE else self.timeout


class TrustPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How trust is computed: the prior for unknown agents, how fast evidence fades, and what
    each outcome weighs.

    Raises:
        ValidationError: a prior that is not positive, a half-life that is not positive (None is
            allowed), or a bad weight; ``field`` names the offender.
    """

    prior_alpha: float = 1.0
    """Pseudo-successes every agent starts with; must be > 0."""
    prior_beta: float = 1.0
    """Pseudo-failures every agent starts with; must be > 0."""
    half_life_s: float | None = DEFAULT_HALF_LIFE_S
    """Seconds after which evidence beyond the prior has halved; None: evidence never fades."""
    weights: TrustWeights = msgspec.field(default_factory=TrustWeights)
    """What one success, failure and timeout adds."""

    def __post_init__(self) -> None:
        check_number(self.prior_alpha, "prior_alpha", positive=True)
        check_number(self.prior_beta, "prior_beta", positive=True)
        if self.half_life_s is not None:
            check_number(self.half_life_s, "half_life_s", positive=True)
        if not isinstance(self.weights, TrustWeights):
            raise ValidationError(
                f"weights must be a TrustWeights, not {type(self.weights).__name__}",
                field="weights",
            )

    @property
    def prior_score(self) -> float:
        """The score of an agent nothing is known about: the prior mean."""
        return self.prior_alpha / (self.prior_alpha + self.prior_beta)


class TrustRecord(msgspec.Struct, frozen=True):
    """One agent's reputation as of ``updated_at``; the form in which it is stored.

    ``alpha`` and ``beta`` include the prior and fade over time; the counters do not fade and
    count calls, whatever their weight.
    """

    alpha: float
    """Evidence for the agent (prior included); > 0."""
    beta: float
    """Evidence against the agent (prior included); > 0."""
    updated_at: float
    """Seconds since the epoch at which ``alpha`` and ``beta`` were last brought up to date."""
    successes: int = 0
    """Successes recorded, ever."""
    failures: int = 0
    """Failures recorded, ever."""
    timeouts: int = 0
    """Timeouts recorded, ever."""

    def __post_init__(self) -> None:
        check_number(self.alpha, "alpha", positive=True)
        check_number(self.beta, "beta", positive=True)
        check_number(self.updated_at, "updated_at")
        for name in ("successes", "failures", "timeouts"):
            count = getattr(self, name)
            if type(count) is not int or count < 0:
                raise ValidationError(f"{name} must be an int >= 0, not {count!r}", field=name)

    @property
    def score(self) -> float:
        """The mean of ``Beta(alpha, beta)``, in [0, 1]: how likely the next outcome is good."""
        return self.alpha / (self.alpha + self.beta)

    def lower_bound(self, k: float = 2.0) -> float:
        """A cautious score: the mean less ``k`` standard deviations, clipped to [0, 1].

        With little evidence the distribution is wide and the bound low, so a minimum-trust
        check on it admits only agents with a record; it approaches ``score`` as evidence grows.

        Raises:
            ValidationError: ``k`` is negative or not a finite number.
        """
        check_number(k, "k", minimum=0.0)
        n = self.alpha + self.beta
        mean = self.alpha / n
        # The variance a*b / (n**2 * (n + 1)), written so that large evidence cannot overflow.
        std = math.sqrt(mean * (1.0 - mean) / (n + 1.0))
        return min(1.0, max(0.0, mean - k * std))


def prior_trust(policy: TrustPolicy, at: float) -> TrustRecord:
    """The record of an agent nothing is known about, as of ``at``."""
    return TrustRecord(policy.prior_alpha, policy.prior_beta, check_number(at, "at"))


def decay_trust(record: TrustRecord, policy: TrustPolicy, at: float) -> TrustRecord:
    """``record`` as of ``at``: the evidence beyond the prior multiplied by
    ``0.5 ** (elapsed / half_life_s)``.

    Time never runs backwards here: for ``at`` at or before ``record.updated_at`` (another
    process's clock may be ahead) the record is returned unchanged. Decaying in several steps
    equals decaying once.
    """
    at = check_number(at, "at")
    if at <= record.updated_at:
        return record
    half_life = policy.half_life_s
    if half_life is None:
        return msgspec.structs.replace(record, updated_at=at)
    keep = 0.5 ** ((at - record.updated_at) / half_life)
    pa, pb = policy.prior_alpha, policy.prior_beta
    return msgspec.structs.replace(
        record,
        alpha=pa + (record.alpha - pa) * keep,
        beta=pb + (record.beta - pb) * keep,
        updated_at=at,
    )


def update_trust(
    record: TrustRecord,
    outcome: Outcome | str,
    policy: TrustPolicy,
    at: float,
    *,
    weight: float = 1.0,
) -> TrustRecord:
    """``record`` decayed to ``at``, then with ``outcome`` added.

    A success adds ``policy.weights.success * weight`` to ``alpha``; a failure or a timeout adds
    its weight times ``weight`` to ``beta``. ``weight`` scales one outcome, for example by the
    size of the job; 0 counts the outcome without moving the score.

    Raises:
        ValidationError: an unknown ``outcome`` (``field="outcome"``), or a ``weight`` that is
            negative or not finite (``field="weight"``).
    """
    kind = parse_outcome(outcome)
    amount = check_number(weight, "weight", minimum=0.0) * policy.weights.for_outcome(kind)
    current = decay_trust(record, policy, at)
    if not math.isfinite(current.alpha + current.beta + amount):
        raise ValidationError(f"weight {weight!r} is too large to add as evidence", field="weight")
    if kind is Outcome.SUCCESS:
        return msgspec.structs.replace(
            current, alpha=current.alpha + amount, successes=current.successes + 1
        )
    if kind is Outcome.FAILURE:
        return msgspec.structs.replace(
            current, beta=current.beta + amount, failures=current.failures + 1
        )
    return msgspec.structs.replace(
        current, beta=current.beta + amount, timeouts=current.timeouts + 1
    )


def check_number(
    value: object, field: str, *, positive: bool = False, minimum: float | None = None
) -> float:
    """Return ``value`` as a float if it is a finite real number (not a bool) meeting the bound.

    Raises:
        ValidationError: naming ``field``.
    """
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond the range of a float
            pass
    if not math.isfinite(number):
        raise ValidationError(f"{field} must be a finite number, not {value!r}", field=field)
    if positive and number <= 0:
        raise ValidationError(f"{field} must be > 0, not {value!r}", field=field)
    if minimum is not None and number < minimum:
        raise ValidationError(f"{field} must be >= {minimum:g}, not {value!r}", field=field)
    return number
