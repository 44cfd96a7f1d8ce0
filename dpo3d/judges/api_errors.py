"""What an OpenAI-compatible server's errors mean to the LLM judge: worth another try or not, how long the
server asked to wait, and one line naming the failure with the API key blanked out wherever it shows up."""

from __future__ import annotations

import datetime
import email.utils
import time

#: used when the key's environment variable is unset: local servers accept anything
DUMMY_KEY = "EMPTY"


def is_transient(err: BaseException) -> bool:
    """Worth another try: no connection, a timeout, rate limited (429), conflict/timeout (408/409), 5xx."""
    import openai

    if isinstance(err, (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)):
        return True  # APITimeoutError is an APIConnectionError
    if isinstance(err, openai.APIStatusError):
        return err.status_code in (408, 409) or err.status_code >= 500
    return False


def retry_after(err: BaseException, now: float | None = None) -> float | None:
    """The wait in seconds a server asked for with an error: its ``Retry-After`` header, in seconds or as an
    HTTP date (a date in the past is 0), or OpenAI's ``retry-after-ms``; None when it sent neither or garbled it."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            value = float(millis) / 1000
            return value if value >= 0 else None
        text = (headers.get("retry-after") or "").strip()
        if not text:
            return None
        if text.replace(".", "", 1).isdigit():
            return float(text)
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP dates are
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def usable_secret(secret: str | None) -> bool:
    """Whether ``secret`` is a key worth hiding (not unset, not the placeholder, not a few characters)."""
    return bool(secret) and len(secret) >= 4 and secret != DUMMY_KEY


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of the API key replaced by ``***``."""
    return text.replace(secret, "***") if usable_secret(secret) and secret in text else text


def short_error(err: BaseException, secret: str | None = None, limit: int = 300) -> str:
    """One line naming the failure, with the API key (if it shows up at all) blanked out."""
    status = getattr(err, "status_code", None)
    head = type(err).__name__ + (f" ({status})" if status is not None else "")
    message = redact(" ".join(str(err).split()), secret)
    text = f"{head}: {message}" if message else head
    return text if len(text) <= limit else text[: limit - 3] + "..."
