"""Credentials out of sight: how a repository URL or a model endpoint may be shown.

A git URL can carry a password or token in its user-info (``https://user:TOKEN@host/r.git``,
``https://TOKEN@host/r.git``), and a model endpoint in its user-info or its query
(``https://proxy/v1?key=...``, ``?sig=...``). :func:`url` replaces each such credential with
``***`` and leaves everything else as it was, byte for byte, so a URL without one is returned
unchanged; :func:`text` does the same to every URL inside a message (a git error, a command
line); :func:`credentials` says which credentials a URL carries, for the CLI to refuse it.

What counts as a credential:

- a password in the user-info, with any scheme (``user:***@``);
- a user name alone, unless the URL is ssh (``ssh://git@host``, ``git@host:r.git``, where the
  user name picks an account and a key does the authenticating) or the name looks like a
  plain account name: one that is shorter than 20 characters and does not start like a token
  (``ghp_``, ``github_pat_``, ``glpat-`` ...). ``https://alice@host`` is kept,
  ``https://ghp_...@host`` is not;
- the value of a query parameter whose name holds ``key``, ``token``, ``secret``,
  ``password``, ``signature`` or ``credential``, or is ``sig``, ``code``, ``auth``, ``pwd``
  or ``passwd``.

Pure functions, no I/O: safe in workflow code (a replay computes the same).
"""

from __future__ import annotations

import re

__all__ = ["MASK", "credentials", "text", "url"]

MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")
_SECRET_WORDS = ("key", "token", "secret", "password", "signature", "credential")
_SECRET_NAMES = {"sig", "code", "auth", "pwd", "passwd", "pass"}
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "x-token")
_PLAIN_USER = 20
"""A user name this long or longer is taken for a token."""


def _secret_param(name: str) -> bool:
    name = name.lower()
    return name in _SECRET_NAMES or any(word in name for word in _SECRET_WORDS)


def _secret_user(user: str, scheme: str) -> bool:
    if scheme.lower() in _SSH_SCHEMES:
        return False
    return len(user) >= _PLAIN_USER or user.lower().startswith(_TOKEN_PREFIXES)


def _parts(value: str) -> tuple[str, str, str, str, str] | None:
    """``scheme://``, user-info (without ``@``), host and the rest up to the query, query
    (with its ``?``), fragment (with ``#``); None when ``value`` has no ``scheme://``."""
    found = _SCHEME.match(value)
    if found is None:
        return None
    prefix, rest = found.group(0), value[found.end() :]
    rest, hash_, fragment = rest.partition("#")
    rest, mark, query = rest.partition("?")
    cut = min(i for i in (rest.find("/"), len(rest)) if i >= 0)
    authority, path = rest[:cut], rest[cut:]
    userinfo, at, host = authority.rpartition("@")
    return prefix, userinfo if at else "", host + path, mark + query, hash_ + fragment


def credentials(value: str) -> list[str]:
    """What credentials the URL ``value`` carries, each in a few words (empty: none)."""
    parts = _parts(value)
    if parts is None:
        return []
    prefix, userinfo, _, query, _ = parts
    found = []
    user, colon, _ = userinfo.partition(":")
    if colon:
        found.append("a password in its user-info (user:password@)")
    elif user and _secret_user(user, prefix[:-3]):
        found.append("a token as its user name (token@)")
    for pair in query[1:].split("&") if query else ():
        name, eq, _ = pair.partition("=")
        if eq and _secret_param(name):
            found.append(f"the query parameter {name}=")
    return found


def url(value: str) -> str:
    """``value`` with every credential replaced by ``***``; unchanged when it has none (or is
    not a ``scheme://`` URL: a path, or an scp-like ``git@host:repo.git``)."""
    parts = _parts(value)
    if parts is None:
        return value
    prefix, userinfo, rest, query, fragment = parts
    user, colon, _ = userinfo.partition(":")
    if colon:
        userinfo = f"{MASK if _secret_user(user, prefix[:-3]) else user}:{MASK}"
    elif user and _secret_user(user, prefix[:-3]):
        userinfo = MASK
    if query:
        pairs = []
        for pair in query[1:].split("&"):
            name, eq, _ = pair.partition("=")
            pairs.append(f"{name}={MASK}" if eq and _secret_param(name) else pair)
        query = "?" + "&".join(pairs)
    return f"{prefix}{userinfo}{'@' if userinfo else ''}{rest}{query}{fragment}"


def text(message: str) -> str:
    """``message`` with :func:`url` applied to every ``scheme://`` URL in it."""
    if "://" not in message:
        return message
    return _IN_TEXT.sub(lambda m: url(m.group(0)), message)
