"""The one set of redaction and escaping rules: what a URL, an error or a log line may show.

Every place that shows, logs, stores in an error or sends to chat a URL uses :func:`redact_url` (one URL) or
:func:`redact_text` (a message that may quote URLs, such as FFmpeg's errors). User strings that reach a log line
(camera names, stream ids, URLs) go through :func:`safe_log` so they cannot forge lines or colour a terminal.

What :func:`redact_url` removes, for any ``scheme://`` URL (a plain path is returned unchanged)::

    userinfo          rtsp://admin:pw@cam/x            -> rtsp://***@cam/x          (user names too: a
                      https://TOKEN@host/x             -> https://***@host/x         lone userinfo is often a token)
    query secrets     ?password=pw&ch=1                -> ?password=***&ch=1
    path secrets      /user=admin&password=pw/         -> /user=admin&password=***/
                      /user=admin_password=pw_channel=1.sdp -> /user=admin_password=***_channel=1.sdp
                      /api/token=abc/x                 -> /api/token=***/x
    fragments         /x#access_token=abc              -> /x#***

A key is secret when it is, case-insensitively and after ``-``/``.`` become ``_``, a password, passphrase,
secret, token, key, signature, credential, session or auth key in the usual camera and cloud spellings:
``password passwd pwd pass passcode secret token access_token auth authorization key apikey api_key sig
signature credential sessionid jwt code``, any key ending in ``_token``, ``_secret``, ``_key``, ``_password``,
``_signature``, ``_credential`` (``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``,
``X-Goog-Signature``, ``X-Goog-Credential``, ``stream_key``, ``client_secret``), and the S3 / GCS v2 signing
keys ``AWSAccessKeyId`` and ``GoogleAccessId``. Azure SAS: ``sig`` is hidden, ``sv``, ``se``, ``sp`` stay. User
names in the query (``user=``, ``username=``) stay: the operator needs to know which account a camera uses.

A URL that cannot be parsed the usual way (an unencoded ``#``, ``/`` or ``@`` in a password, a broken IPv6
host, an authority that is not ``host[:port]``) is redacted more, never less: the whole userinfo, or the whole
authority, becomes ``***``. None of these functions raises.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus

__all__ = ["REDACTED", "redact_url", "redact_text", "is_secret_key", "safe_log"]

#: What a hidden value is replaced with.
REDACTED = "***"

_SECRET_EXACT = frozenset({
    "password", "passwd", "pwd", "pass", "passcode", "passphrase", "pw", "secret", "token", "auth", "authorization",
    "key", "apikey", "authkey", "accesskey", "secretkey", "streamkey", "privatekey", "sig", "signature",
    "credential", "credentials", "session", "sessionid", "jsessionid", "phpsessid", "sid", "jwt", "code",
    "awsaccesskeyid", "googleaccessid",
    "accesstoken", "authtoken", "sessiontoken", "refreshtoken", "idtoken", "privatetoken", "bearer",
})
_SECRET_SUFFIX = re.compile(
    r"_(token|secret|key|password|passwd|pwd|pass|passcode|passphrase|signature|sig|credential|credentials"
    r"|sessionid|auth|jwt)$"
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://", re.DOTALL)
_HOST_PORT = re.compile(r"^(\[[0-9A-Za-z:.%\-]*\]|[^\[\]:@/?#\s]*)(:[0-9]*)?$")
_HOST_AFTER_AT = re.compile(r"(\[[0-9A-Za-z:.%\-]*\]|[A-Za-z0-9.\-_~%]+)(:[0-9]*)?(?=$|[/?#])")
#: ``key=value`` inside one path segment; pairs are separated by ``&``, ``;``, ``,`` or ``_`` before the next key
#: (Dahua and XMEye cameras write ``/user=admin_password=pw_channel=1_stream=0.sdp``).
_SEGMENT_PAIR = re.compile(r"(^|[&;,_])([A-Za-z][A-Za-z0-9_.\-]*)=(.*?)(?=[&;,]|_[A-Za-z][A-Za-z0-9]*=|$)", re.DOTALL)
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_TRAILING_PUNCT = ".,;:!?)]}"


def is_secret_key(key: str) -> bool:
    """True when a query or path parameter named ``key`` holds a secret (see the module doc for the list)."""
    k = re.sub(r"[-.\s]", "_", unquote_plus(str(key))).strip("_").lower()
    return k in _SECRET_EXACT or bool(_SECRET_SUFFIX.search(k))


def _redact_pairs(text: str, sep: str) -> str:
    """A query string (``sep`` ``&``) with secret values hidden; every other byte kept as it was."""
    out = []
    for item in text.split(sep):
        key, eq, _value = item.partition("=")
        out.append(f"{key}={REDACTED}" if eq and is_secret_key(key) else item)
    return sep.join(out)


def _redact_segment(segment: str) -> str:
    """One path segment with the values of secret ``key=value`` pairs hidden."""
    decoded = unquote(segment)
    if decoded != segment:
        # Percent-encoded pairs (``user%3Dadmin%26password%3Dpw``): hide the whole segment if it holds a secret.
        return REDACTED if "=" in decoded and _redact_segment(decoded) != decoded else segment
    if "=" not in segment:
        return segment
    return _SEGMENT_PAIR.sub(
        lambda m: f"{m.group(1)}{m.group(2)}={REDACTED}" if is_secret_key(m.group(2)) else m.group(0), segment)


def _split_authority(rest: str) -> tuple[str | None, str, str]:
    """``rest`` (what follows ``scheme://``) as (userinfo or None, host[:port], the remainder from / ? or #)."""
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    authority, remainder = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        return userinfo, host, remainder
    if "@" not in remainder:
        return None, authority, remainder
    # A password with an unencoded / ? or # in it ("user:pa/ss@host", "user:12#34@host"): the userinfo runs to
    # the last "@" that a host follows; when the cut looks like host:port, only as far as the next "/".
    if _HOST_PORT.match(authority):
        if ":" not in authority or authority.startswith("["):
            return None, authority, remainder
        first = re.split(r"[/?#]" if remainder[0] == "/" else "/", remainder[1:], maxsplit=1)[0]
        limit = len(authority) + 1 + len(first)
    else:
        limit = len(rest)
    found = None
    for m in re.finditer("@", rest[:limit]):
        host = _HOST_AFTER_AT.match(rest, m.end())
        if host:
            found = (m.start(), host.end())
    if found is not None:
        at, host_end = found
        return rest[:at], rest[at + 1:host_end], rest[host_end:]
    return None, authority, remainder


def _redact(url: str) -> str:
    m = _SCHEME.match(url)
    if m is None:
        return url  # a plain path carries no credentials
    head, rest = m.group(0), url[m.end():]
    userinfo, host, remainder = _split_authority(rest)
    if not _HOST_PORT.match(host):
        host = REDACTED  # not host[:port]: it may be the tail of a password
    authority = (f"{REDACTED}@" if userinfo else ("@" if userinfo == "" else "")) + host

    path, hash_, fragment = remainder.partition("#")
    path, qmark, query = path.partition("?")
    path = "/".join(_redact_segment(s) for s in path.split("/"))
    query = _redact_pairs(query, "&") if query else query
    if ";" in query:
        query = _redact_pairs(query, ";")
    return f"{head}{authority}{path}{qmark}{query}{hash_}{REDACTED if fragment else ''}"


def redact_url(url: object) -> str:
    """``url`` without credentials (userinfo, secret query and path values, the fragment). Never raises.

    A plain path (no ``scheme://``) is returned unchanged. See the module doc for the rules.
    """
    try:
        if isinstance(url, bytes):
            url = url.decode("utf-8", "replace")
        text = os.fspath(url) if isinstance(url, os.PathLike) else str(url)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return _redact(text)
    except Exception:  # noqa: BLE001 - a redactor must never be the thing that fails; show nothing instead
        try:
            m = _SCHEME.match(str(url))
            return f"{m.group(0)}{REDACTED}" if m else REDACTED
        except Exception:  # noqa: BLE001 - str() itself failed
            return REDACTED


def _secrets_in(url: str) -> list[str]:
    """The secret values a raw URL carries (password, userinfo, secret parameters), longest first."""
    m = _SCHEME.match(url)
    if m is None:
        return []
    userinfo, _host, remainder = _split_authority(url[m.end():])
    found: list[str] = []
    if userinfo:
        found += [userinfo, *userinfo.split(":", 1)[1:]]
    path, _, fragment = remainder.partition("#")
    path, _, query = path.partition("?")
    for item in re.split(r"[&;]", query):
        key, eq, value = item.partition("=")
        if eq and is_secret_key(key):
            found.append(value)
    for segment in path.split("/"):
        for pair in _SEGMENT_PAIR.finditer(segment):
            if is_secret_key(pair.group(2)):
                found.append(pair.group(3))
    if fragment:
        found.append(fragment)
    out = set()
    for s in found:
        out.update({s, unquote(s), unquote_plus(s)})
    # Short values ("1", "ab") would blank ordinary words out of the message; the URL itself is still redacted.
    return sorted((s for s in out if len(s) >= 4), key=len, reverse=True)


def _redact_match(m: re.Match[str]) -> str:
    raw = m.group(0)
    stripped = raw.rstrip(_TRAILING_PUNCT)
    return redact_url(stripped) + raw[len(stripped):]


def redact_text(text: object, urls: Iterable[str] = ()) -> str:
    """``text`` with every URL in it redacted. Never raises.

    The raw ``urls`` given (the ones the text may quote, such as the source an error came from) are replaced
    first, as they are and percent-decoded, and any secret they carry (a password, a token) is hidden wherever
    else it appears in the text; then anything URL-shaped is redacted with :func:`redact_url`.
    """
    try:
        out = str(text)
        for raw in urls or ():
            if not raw:
                continue
            raw = str(raw)
            shown = redact_url(raw)
            for form in {raw, unquote(raw)}:
                if form in out:
                    out = out.replace(form, shown)
            for secret in _secrets_in(raw):
                out = out.replace(secret, REDACTED)
        return _URL_IN_TEXT.sub(_redact_match, out)
    except Exception:  # noqa: BLE001 - never fail while reporting another failure
        return REDACTED


# ---- log lines ----------------------------------------------------------------------------------
_LOG_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_LOG_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\"})
# Line and paragraph separators, and the bidirectional overrides that reorder what a terminal shows.
_LOG_ESCAPES.update({c: f"\\u{c:04x}" for c in [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]})


def safe_log(text: object) -> str:
    """``text`` fit for one log line: control characters, line separators and bidi overrides escaped the way
    ``repr`` writes them (``\\n``, ``\\x1b``, ``\\u2028``), and backslashes doubled so an escape cannot be faked."""
    try:
        return str(text).translate(_LOG_ESCAPES)
    except Exception:  # noqa: BLE001 - str() of a hostile object
        return REDACTED
