"""Redaction: no secret leaves the process in a URL shown, a message or a log record.

The one place that decides what a secret looks like in text and how it is hidden. It imports nothing
of the project, so every layer (descriptions, stores, coordination, history, launchers, the CLI and
the agent) can use it.

Names
    :func:`is_secret_name` is the one rule for which option, parameter or header names hold a
    secret: the storage options a store keeps out of its public record
    (:func:`pilotdata.stores.base.is_secret_option`), the options a description keeps out of its
    stored form (:func:`pilotdata.descriptions.is_secret_key`) and the ``name=value`` pairs scrubbed
    from text all use it. The disputed names, decided:

    ====================================  ========  ===================================================
    name                                  secret?   why
    ====================================  ========  ===================================================
    ``key``, ``secret``, ``token``,       yes       s3fs's access key id and secret key, session tokens
    ``*_key``, ``*Key``, ``*password*``,            (``aws_secret_access_key``, ``sse_customer_key``,
    ``passwd``, ``pwd``, ``passphrase``             ``SSECustomerKey``), passwords, key passphrases
    ``*key_id*`` (``aws_access_key_id``,  yes       an access key id names a credential; a KMS key id
    ``SSEKMSKeyId``)                                is kept out too, on the safe side
    ``pkey``, ``sock``, ``session``       yes       live objects: a paramiko key, a connected socket,
                                                    a logged-in session; they carry credentials and
                                                    are never stored
    ``key_filename``, ``*_file``,         no        a path says where a key is, not what it is: it is
    ``*_filename``, ``*_path``, ``*_dir``           kept in a store's record so another process on the
                                                    host re-opens the store with the same key file
                                                    (it does reveal a path in the user's home, as the
                                                    URLs and working directories already do)
    ``region``, ``aws_region``,           no        where, not who: no credential
    ``region_name``, ``aws_profile``,
    ``profile``, ``endpoint_url``
    ``signature_version``, ``keys``,      no        a name that only contains a secret word
    ``monkey``, ``look_for_keys``
    ====================================  ========  ===================================================

URLs
    :func:`redact_url` masks a URL's password and secret query parameters as ``***`` (for messages
    and history: ``sftp://alice:***@host/pd``); :func:`public_url` removes them instead (for a URL
    shown as an identity: ``redis://host:6379/0``); :func:`url_secrets` lists the secret values a URL
    carries. A string that is not one ``scheme://...`` URL is scrubbed as text instead, so nothing
    fails to parse and a ``user:password@`` is hidden wherever it stands.

Text
    :func:`scrub` hides every secret registered at runtime with :func:`register_secret` (a store's
    key, an SSH passphrase, a Redis password) and credentials by their shape: URL userinfo,
    ``name=value`` and ``'name': 'value'`` pairs whose name says secret (:func:`is_secret_name`),
    ``Authorization:`` and token headers, AWS access key ids and PEM private keys. That covers what libraries log:
    botocore's DEBUG request logs print ``Credential=AKIA.../...`` in Authorization headers,
    ``X-Amz-Credential=`` in presigned query strings and ``aws_access_key_id`` in dict reprs.

Logs
    :class:`RedactingFilter` scrubs a record's message (arguments merged in), exception and stack
    text; :func:`install_log_filter` puts it on every handler of the root logger, so records of
    library loggers that propagate there are scrubbed too.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "RedactingFilter",
    "install_log_filter",
    "is_secret_name",
    "public_url",
    "redact_url",
    "register_secret",
    "scrub",
    "url_secrets",
]

MASK = "***"
"""What a hidden secret is replaced with."""

MIN_SECRET_LENGTH = 4
"""Registered secrets shorter than this are ignored: replacing them everywhere would mangle ordinary
text (a password ``pw`` inside ``pwd``) while hiding nothing an attacker could not guess."""

# Parts of a name that mean a credential, in any case (``-`` and ``_`` alike).
_SECRET_WORDS = (
    "password", "passwd", "passphrase", "secret", "token", "credential", "signature", "authorization",
    "access_key", "accesskey", "api_key", "apikey", "private_key", "privatekey", "key_id", "keyid", "cookie",
)
# Whole names that are credentials, in lower case as libraries spell them (``KEY=VALUE`` in a usage
# message is no secret): ``key`` is s3fs's access key id, ``pkey`` a paramiko key, ``sock`` and
# ``session`` live connections; and any name ending in ``_key`` / ``-key`` / ``Key``
# (``sse_customer_key``, ``x-api-key``, boto3's ``SSECustomerKey``).
_SECRET_EXACT = ("key", "pkey", "pwd", "sig", "sock", "session")
_SECRET_SUFFIX = r"[\w.\-]{0,64}(?:[_-][Kk][Ee][Yy]|[a-z0-9]Key)"
# Names that contain a secret word but hold none (lower case): paths, and settings named after a word.
_PUBLIC_EXACT = frozenset({"signature_version"})
_PUBLIC_SUFFIXES = ("_file", "_filename", "_path", "_dir", "-file", "-path")

_WORDS = "|".join(re.escape(word).replace("_", "[_-]") for word in _SECRET_WORDS)
_SECRET_NAME = rf"(?:(?i:[\w.\-]{{0,64}}?(?:{_WORDS})[\w.\-]{{0,64}})|{_SECRET_SUFFIX}|{'|'.join(_SECRET_EXACT)})"
"""A secret name as a pattern (bounded, so matching a long token stays cheap)."""
_SECRET_NAME_RE = re.compile(_SECRET_NAME)


def is_secret_name(name: str) -> bool:
    """Whether a parameter, option or header of this name holds a credential (the table above).

    ``password``, ``X-Amz-Credential``, ``aws_secret_access_key``, ``AWSAccessKeyId``, ``api_token``,
    ``Signature``, ``key``, ``ssh_key``, ``session`` ... are; ``db``, ``region``, ``endpoint_url``,
    ``key_filename``, ``signature_version`` are not.
    """
    bare = name.strip()
    if _SECRET_NAME_RE.fullmatch(bare) is None:
        return False
    lowered = bare.lower()
    return lowered not in _PUBLIC_EXACT and not lowered.endswith(_PUBLIC_SUFFIXES)


# ---------------------------------------------------------------------------------------------- URLs
_SCHEME_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*")


def _split(url: str) -> tuple[str, str, str, str, str] | None:
    """``(scheme://, netloc, path, query, fragment)`` of one ``scheme://...`` URL, else ``None``.

    Split by hand rather than with :func:`urllib.parse.urlsplit`: it never raises (a bad port or a
    stray ``[`` is no reason to show a password) and keeps ``unix:///path`` as written.
    """
    if not _SCHEME_URL.fullmatch(url):
        return None
    head, _, rest = url.partition("://")
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    netloc, tail = rest[:end], rest[end:]
    tail, hash_, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    return head + "://", netloc, path, question + query, hash_ + fragment


def _params(text: str, *, drop: bool) -> str:
    """``a=1&password=x`` with secret values masked (or the pairs dropped); other pairs kept verbatim."""
    kept: list[str] = []
    for pair in text.split("&"):
        name, eq, _ = pair.partition("=")
        if not eq or not is_secret_name(unquote(name)):
            kept.append(pair)
        elif not drop:
            kept.append(f"{name}={MASK}")
    return "&".join(kept)


def _rewrite(url: str, *, drop: bool) -> str:
    parts = _split(url)
    if parts is None:
        return _scrub_shapes(url)
    scheme, netloc, path, query, fragment = parts
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if drop:
            netloc = f"{user}@{host}" if user else host
        elif colon and password:
            netloc = f"{user}:{MASK}@{host}"
    if query:
        query = "?" + _params(query[1:], drop=drop)
        query = "" if query == "?" else query
    if fragment and "=" in fragment:
        fragment = "#" + _params(fragment[1:], drop=drop)
        fragment = "" if fragment == "#" else fragment
    return f"{scheme}{netloc}{path}{query}{fragment}"


def redact_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``.

    ``redis://:pw@h:6379/0`` -> ``redis://:***@h:6379/0``; ``s3://AKIA:k@host/b`` -> ``s3://AKIA:***@host/b``;
    ``unix:///r.sock?db=1&password=pw`` -> ``unix:///r.sock?db=1&password=***``. A user name stays.
    Anything that is not one ``scheme://`` URL (a message quoting URLs, ``user:pw@host``, garbage) is
    scrubbed as text by the same shapes as :func:`scrub` (without the registered secrets).
    """
    return _rewrite(url, drop=False)


def public_url(url: str) -> str:
    """``url`` with its password and secret query parameters removed, for showing it as an identity.

    ``redis://:pw@h:1/0`` -> ``redis://h:1/0``; ``rediss://user:p%40ss@h:1/2`` -> ``rediss://user@h:1/2``;
    ``unix:///tmp/r.sock?db=1&password=pw`` -> ``unix:///tmp/r.sock?db=1``. Not a URL: as :func:`redact_url`.
    """
    return _rewrite(url, drop=True)


def url_secrets(url: str) -> list[str]:
    """The secrets ``url`` carries (password, secret query values), each raw and percent-decoded."""
    parts = _split(url)
    if parts is None:
        return []
    _, netloc, _, query, fragment = parts
    found: list[str] = []
    userinfo, at, _ = netloc.rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    for params in (query[1:], fragment[1:]):
        for pair in params.split("&") if params else []:
            name, _, value = pair.partition("=")
            if is_secret_name(unquote(name)):
                found.append(value)
    out: list[str] = []
    for secret in found:
        for form in (secret, unquote(secret)):
            if form and form != MASK and form not in out:
                out.append(form)
    return out


# ---------------------------------------------------------------------------------------------- text
_registered: set[str] = set()
_registry_lock = threading.Lock()
_by_length: tuple[str, ...] = ()  # the registry, longest first (so a secret's prefix never wins)


def register_secret(*values: str | None) -> None:
    """Remember secrets known at runtime: :func:`scrub` and the log filter hide them from now on.

    Also their percent-decoded forms. Values shorter than :data:`MIN_SECRET_LENGTH` are ignored.
    """
    global _by_length
    fresh = {form for value in values if value for form in (value, unquote(value))}
    fresh = {form for form in fresh if len(form) >= MIN_SECRET_LENGTH and form != MASK}
    with _registry_lock:
        if fresh - _registered:
            _registered.update(fresh)
            _by_length = tuple(sorted(_registered, key=len, reverse=True))


# ``user:password@`` after an optional ``scheme://`` (the password may hold '@': the last one counts).
# Matches start where a token starts (lookbehind), so a long token costs one attempt, not one per character.
_USERINFO = re.compile(r"(?<![^\s'\"/(\[{,;=])(?P<user>[^\s:/@'\"]{0,256}):(?P<secret>[^\s/'\"]+)@")
# Only names that say secret match at all, so a harmless pair never swallows a secret one inside it.
# ``name=value`` (query strings, keyword arguments, ``Credential=AKIA.../...`` in an Authorization header).
_ASSIGNMENT = re.compile(
    rf"(?<![\w.\-])(?P<name>{_SECRET_NAME})="
    r"(?:(?P<b>b?)(?P<q>['\"])(?P<quoted>(?:\\.|(?!(?P=q)).)*?)(?P=q)|(?P<secret>[^\s&,;'\")\]}]+))"
)
# ``'name': 'value'`` (dict reprs, JSON).
_MAPPING = re.compile(
    rf"(?P<nq>['\"])(?P<name>{_SECRET_NAME})(?P=nq)(?P<sep>\s*:\s*)"
    r"(?P<b>b?)(?P<q>['\"])(?P<secret>(?:\\.|(?!(?P=q)).)*?)(?P=q)"
)
# ``Authorization: AWS4-HMAC-SHA256 ...`` at the start of a line (HTTP headers as some libraries log them).
_HEADER = re.compile(
    r"(?im)^(?P<head>\s*(?:proxy-)?(?:authorization|x-amz-security-token|x-api-key|x-auth-token|cookie):[ \t]*)"
    r"(?P<secret>\S.*)$"
)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)


_NOT_SECRETS = frozenset({MASK, "None", "True", "False", "null", "true", "false"})


def _mask_assignment(match: re.Match[str]) -> str:
    value = match["quoted"] if match["q"] else match["secret"]
    if not value or value in _NOT_SECRETS or not is_secret_name(match["name"]):
        return match[0]
    if match["q"]:
        return f"{match['name']}={match['b']}{match['q']}{MASK}{match['q']}"
    return f"{match['name']}={MASK}"


def _mask_mapping(match: re.Match[str]) -> str:
    if not match["secret"] or match["secret"] in _NOT_SECRETS or not is_secret_name(match["name"]):
        return match[0]
    return f"{match['nq']}{match['name']}{match['nq']}{match['sep']}{match['b']}{match['q']}{MASK}{match['q']}"


def _scrub_shapes(text: str) -> str:
    """Hide credentials recognised by their shape (no registered secrets)."""
    text = _PEM.sub(MASK, text)
    text = _USERINFO.sub(lambda m: m[0] if m["secret"] == MASK else f"{m['user']}:{MASK}@", text)
    text = _MAPPING.sub(_mask_mapping, text)
    text = _ASSIGNMENT.sub(_mask_assignment, text)
    text = _HEADER.sub(lambda m: m[0] if m["secret"].strip() == MASK else f"{m['head']}{MASK}", text)
    return _AWS_KEY_ID.sub(MASK, text)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without any secret: the registered ones, ``secrets`` (any length), and known shapes."""
    extra = sorted({s for s in secrets if s and s != MASK}, key=len, reverse=True)
    for secret in (*extra, *_by_length):
        if secret in text:
            text = text.replace(secret, MASK)
    return _scrub_shapes(text)


# ---------------------------------------------------------------------------------------------- logs
class RedactingFilter(logging.Filter):
    """Scrubs every record it sees (message with its arguments, exception and stack text); drops none.

    On a handler it covers the records of every logger that propagates to that handler, libraries'
    included. The exception text is formatted here with the standard formatter, so a handler's own
    ``formatException`` is not used for scrubbed records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; always keep it."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it when the handler formats it
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put a :class:`RedactingFilter` on every handler of ``logger`` (default: the root logger).

    Call it after the handlers are configured (``logging.basicConfig``); idempotent.
    """
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
