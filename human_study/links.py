"""Rater identity: per-rater signed links, and open enrolment for crowd platforms.

A rater link is ``BASE/?rater=ID&sig=SIG`` with ``SIG = HMAC-SHA256(link secret, "rater-link" | study | ID)`` (hex,
:data:`SIG_LENGTH` characters). The link secret is drawn at random when the study's database is created and kept
there (``meta``), so every app replica on one database verifies the same links and nobody without the database
can make one. The app checks the signature on every load; a link with no, a wrong or a repeated ``rater``/``sig``
is refused, so editing the URL cannot pick or switch identity.

Open enrolment (``raters: {enrolment: open}``, for crowd platforms such as Prolific): a link without ``rater``
enrols a new rater under an id the server draws, stores the platform's participant/study/session parameters
(:class:`~human_study.config.PlatformParams`) with it, and replaces the URL by that rater's signed link, so a
refresh resumes. Each platform participant id enrols once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence
from urllib.parse import urlencode

from .config import Study
from .store import Enrolment

RATER_PARAM = "rater"
SIG_PARAM = "sig"
SIG_LENGTH = 32  # 128 bits of HMAC: not guessable
#: Platform parameter values kept with a rater (Prolific ids are 24 hex digits; anything odd is refused).
PLATFORM_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

NO_TOKEN = "This link has no rater token. Please use the personal link you were given."
NOT_VALID = "This rater link is not valid. Please use the personal link you were given, unchanged."


def link_signature(link_secret: str, study_name: str, rater: str) -> str:
    """The signature of ``rater``'s link for ``study_name`` (hex, :data:`SIG_LENGTH` characters)."""
    msg = "\x1f".join(("rater-link", study_name, rater)).encode()
    return hmac.new(link_secret.encode(), msg, hashlib.sha256).hexdigest()[:SIG_LENGTH]


def signature_ok(link_secret: str, study_name: str, rater: str, sig: str) -> bool:
    """Whether ``sig`` signs ``rater`` (constant-time comparison)."""
    return hmac.compare_digest(link_signature(link_secret, study_name, rater).encode(), sig.encode())


def link_params(link_secret: str, study_name: str, rater: str) -> dict[str, str]:
    """The query parameters of ``rater``'s signed link."""
    return {RATER_PARAM: rater, SIG_PARAM: link_signature(link_secret, study_name, rater)}


def rater_link(base_url: str, link_secret: str, study_name: str, rater: str) -> str:
    """``BASE/?rater=ID&sig=SIG``."""
    return f"{base_url.rstrip('/')}/?{urlencode(link_params(link_secret, study_name, rater))}"


def open_enrolment_link(base_url: str, study: Study) -> str:
    """The one link to give a crowd platform: its placeholders ask it to fill in the participant parameters."""
    names = study.raters.platform
    query = "&".join(f"{p}={{{{%{p}%}}}}" for p in (names.participant, names.study, names.session))
    return f"{base_url.rstrip('/')}/?{query}"


def default_ids(count: int, prefix: str = "r") -> list[str]:
    """``r001, r002, ...`` (zero-padded to at least three digits)."""
    width = max(3, len(str(count)))
    return [f"{prefix}{i + 1:0{width}d}" for i in range(count)]


@dataclass(frozen=True)
class Identity:
    """Who the URL says the visitor is: a verified ``rater``, a request to ``enrol`` (open enrolment), or a
    refusal with the ``error`` to show. ``enrolment`` holds the platform parameters that came with the link."""

    rater: str | None = None
    enrol: bool = False
    error: str | None = None
    enrolment: Enrolment = field(default_factory=Enrolment)


def identify(get_all: Callable[[str], Sequence[str]], study: Study, link_secret: str) -> Identity:
    """Resolve the visitor from the query string (``get_all(name)`` lists every value of a parameter)."""
    names = study.raters.platform
    platform = {}
    for key, param in (("participant_id", names.participant), ("study_id", names.study),
                       ("session_id", names.session)):
        values = list(get_all(param))
        if len(values) > 1 or (values and not PLATFORM_VALUE_RE.match(values[0])):
            return Identity(error=NOT_VALID)
        platform[key] = values[0] if values else None
    enrolment = Enrolment(**platform)
    raters, sigs = list(get_all(RATER_PARAM)), list(get_all(SIG_PARAM))
    if len(raters) > 1 or len(sigs) > 1:  # a second rater= must not switch identity
        return Identity(error=NOT_VALID)
    if not raters:
        if sigs:
            return Identity(error=NOT_VALID)
        if study.raters.enrolment == "open":
            return Identity(enrol=True, enrolment=enrolment)
        return Identity(error=NO_TOKEN)
    rater = raters[0]
    if not sigs or not study.token_allowed(rater) or not signature_ok(link_secret, study.name, rater, sigs[0]):
        return Identity(error=NOT_VALID)
    return Identity(rater=rater, enrolment=enrolment)

