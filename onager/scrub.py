"""One scrubber for everything user-typed that onager records as metadata.

provenance.json, launch.json and the job index keep the command line, the scheduler
arguments after `--`, git remotes, pip freeze and a few environment variables, and
they are often shared (pasted into issues, synced, committed). Credentials must not go
with them, so every such text passes through `scrub_text` / `scrub_argv` /
`scrub_value` / `scrub_env` here, and only here:

- URL credentials: `https://user:pass@host` -> `https://host` (an ssh login name stays);
  scp style `user:password@host:path` -> `user@host:path`;
- query parameters with a secret-looking name (`?private_token=`, `access_token=`,
  `token=`, `sig=`, `key=`, `X-Amz-Signature=`, ...) -> `name=REDACTED`;
- `NAME=value` assignments and `--name value` / `--name=value` options whose name looks
  secret (`WANDB_API_KEY=...`, `--password ...`) -> the value becomes `REDACTED`;
- the values of environment variables with a secret-looking name, wherever they occur.

A secret-looking name contains TOKEN, SECRET, PASSW(ORD|D), PASSPHRASE or CREDENTIAL, has
a word KEY (or one ending in APIKEY, PRIVATEKEY, ACCESSKEY, ...), a word starting with AUTH
(not AUTHOR), or a word SIG / SIGNATURE / COOKIE (case-insensitive); an environment
variable's name counts when it contains KEY anywhere. The task records that a task RUNS
(tasks.sh, tasks.jsonl, jobs.json, wrapper.sh) are not metadata and keep the real text: a
task must get its argv byte for byte.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

REDACTED = "REDACTED"
#: values shorter than this are not searched for (a secret variable set to "1" or "true")
MIN_ENV_VALUE = 8

_SUBSTRINGS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL")
_KEY_ENDINGS = ("APIKEY", "PRIVATEKEY", "ACCESSKEY", "SSHKEY", "AUTHKEY", "LICENSEKEY", "MASTERKEY",
                "SIGNINGKEY", "ENCRYPTIONKEY", "DEPLOYKEY")
_WORDS = ("SIG", "SIGNATURE", "COOKIE")

_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s]*)@")
# scp style user:password@host (a password never holds spaces, '@' or ',' here: hosts lists stay intact)
_SCP = re.compile(r"(?<![\w.+\-:/@])(?P<user>[\w.+\-]+):(?P<password>[^\s@,/'\"]+)@"
                  r"(?P<host>(?!\d+(?![\w.\-]))[A-Za-z0-9](?:[\w\-]*[A-Za-z0-9])?(?:\.[\w\-]+)*)")
# (a host is never all digits: `--signal=B:USR1@60` is Slurm's warning signal, not a login)
_QUERY = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&#\s;?'\"]+)=(?P<value>[^&#\s;'\"]*)")
_VALUE = r"""(?:'[^']*'|"(?:[^"\\]|\\.)*"|[^\s'"]+)+"""
# `name==1.0` is a pip requirement, not an assignment
_ASSIGN = re.compile(r"(?<![\w.\-?&;/$])(?P<name>[A-Za-z_][\w.\-]*)=(?!=)(?P<value>" + _VALUE + ")")
_OPTION = re.compile(r"(?<![\w\-])(?P<flag>--?[A-Za-z][\w.\-]*)(?:=(?P<joined>" + _VALUE + r")|"
                     r"(?P<space>\s+)(?P<separate>(?!-)" + _VALUE + "))")


def is_secret_name(name: str) -> bool:
    """Whether a variable, option or query parameter of this name holds a secret.

    KEY counts as a word or a word's end (`api_key`, `apikey`, `--ssh-key`, `SECRETKEY`),
    not inside other words (`--monkey`, `--keyboard` and `--hotkey` are not secrets).
    """
    upper = name.upper()
    if any(s in upper for s in _SUBSTRINGS):
        return True
    words = [w for w in re.split(r"[^A-Z0-9]+", upper) if w]
    return any(w in _WORDS or w == "KEY" or w.startswith("KEY") and w[3:].isdigit()
               or w.endswith(_KEY_ENDINGS) or (w.startswith("AUTH") and not w.startswith("AUTHOR"))
               for w in words)


def is_secret_variable(name: str) -> bool:
    """Environment variables: any name that contains KEY counts (`WANDB_APIKEY`, `MYKEY`)."""
    return is_secret_name(name) or "KEY" in name.upper()


def _env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named environment variables, longest first (paths are not secrets)."""
    environ = os.environ if environ is None else environ
    values = set()
    for name, value in environ.items():
        if is_secret_variable(name) and len(value) >= MIN_ENV_VALUE and value != REDACTED \
                and not os.path.exists(value):
            values.add(value)
    return sorted(values, key=len, reverse=True)


def _option_value(flag: str) -> bool:
    name = flag.lstrip("-")
    return is_secret_name(name)


def scrub_text(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every credential it visibly holds replaced (see the module docstring)."""
    if not text:
        return text

    def userinfo(match: re.Match[str]) -> str:
        scheme, info = match.group("scheme"), match.group("userinfo")
        if "ssh" in scheme.lower() and info:
            return f"{scheme}{info.split(':', 1)[0]}@"
        return scheme

    def query(match: re.Match[str]) -> str:
        if is_secret_name(match.group("name")) and match.group("value"):
            return f"{match.group('sep')}{match.group('name')}={REDACTED}"
        return match.group(0)

    def assign(match: re.Match[str]) -> str:
        if is_secret_name(match.group("name")) and match.group("value") != REDACTED:
            return f"{match.group('name')}={REDACTED}"
        return match.group(0)

    def option(match: re.Match[str]) -> str:
        flag = match.group("flag")
        if not _option_value(flag):
            return match.group(0)
        if match.group("joined") is not None:
            return f"{flag}={REDACTED}"
        return f"{flag}{match.group('space')}{REDACTED}"

    text = _URL_USERINFO.sub(userinfo, text)
    text = _SCP.sub(lambda m: f"{m.group('user')}@{m.group('host')}", text)
    text = _QUERY.sub(query, text)
    text = _ASSIGN.sub(assign, text)
    text = _OPTION.sub(option, text)
    for value in _env_secrets(environ):
        text = text.replace(value, REDACTED)
    return text


def scrub_argv(words: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """An argv as recorded: each word scrubbed, and the word after a secret-named option too."""
    out: list[str] = []
    hide_next = False
    for word in words:
        word = str(word)
        if hide_next and not word.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        out.append(scrub_text(word, environ))
        if re.fullmatch(r"--?[A-Za-z][\w.\-]*", word) and _option_value(word):
            hide_next = True
    return out


def scrub_value(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A JSON-like value as recorded: strings scrubbed, lists of strings as argv, and the
    string values of secret-named keys replaced (numbers, booleans and None stay)."""
    if isinstance(value, str):
        return scrub_text(value, environ)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return scrub_argv(value, environ)
        return [scrub_value(v, environ) for v in value]
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and is_secret_name(key) and isinstance(item, str) and item:
                out[key] = REDACTED
            else:
                out[key] = scrub_value(item, environ)
        return out
    return value


def scrub_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Environment variables as recorded: secret-named ones keep their name, never their value."""
    return {name: (REDACTED if is_secret_variable(name) else scrub_text(value)) for name, value in environ.items()}

