"""How to reach a PACS, described once: a YAML file, ``MEDSEG_PACS_*`` variables or command-line flags.

Two kinds of peer:

* DICOMweb: ``url`` (the service root, e.g. ``https://pacs.example.org/dicom-web``), HTTP
  Basic auth (``username`` with ``password_env`` or ``password_file``) or a bearer token
  (``token_env`` or ``token_file``), and ``verify``: ``true`` (the system's CAs),
  ``false`` (no TLS verification) or the path of a CA bundle;
* DIMSE: the peer's ``ae_title``, ``host`` and ``port``, and our own ``calling_ae_title``;
  ``move_ae`` and ``move_port`` to retrieve by C-MOVE (to medseg's own temporary Storage SCP
  under that AE title and port, which the PACS must know) instead of C-GET; ``tls: true`` for
  DICOM over TLS, the PACS's certificate checked against ``verify`` (true: the system's CAs,
  or a CA bundle file), and ``certificate`` with ``private_key`` where the PACS wants ours.

Secrets never sit in the file itself: the file names an environment variable or a file
that holds them. They are read when the settings are loaded, kept in a :class:`Secret`
whose ``repr`` hides the value, and never appear in logs or error messages. Later
sources override earlier ones: file, then environment (``MEDSEG_PACS_URL``,
``MEDSEG_PACS_AE_TITLE``, ... and ``MEDSEG_PACS_PASSWORD`` / ``MEDSEG_PACS_TOKEN`` for the
secrets themselves), then flags.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from medseg.errors import ConfigError

Protocol = Literal["dicomweb", "dimse"]

#: Keys a settings file may hold.
KEYS = (
    "protocol",
    "url",
    "username",
    "password_env",
    "password_file",
    "token_env",
    "token_file",
    "verify",
    "timeout",
    "ae_title",
    "host",
    "port",
    "calling_ae_title",
    "move_ae",
    "move_port",
    "tls",
    "certificate",
    "private_key",
)
#: Environment variables: ``MEDSEG_PACS_<KEY>`` for every key, plus the secrets themselves.
ENV_PREFIX = "MEDSEG_PACS_"
ENV_FILE = "MEDSEG_PACS_FILE"
ENV_PASSWORD = "MEDSEG_PACS_PASSWORD"
ENV_TOKEN = "MEDSEG_PACS_TOKEN"

DEFAULT_CALLING_AE = "MEDSEG"
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 characters, no backslash or control characters


class Secret:
    """A password or token; its ``repr`` and ``str`` never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class PacsSettings:
    """One PACS connection.

    Attributes:
        protocol: ``dicomweb`` or ``dimse``.
        url: DICOMweb service root (no credentials in it).
        username: HTTP Basic user name (with ``password``).
        password: HTTP Basic password.
        token: bearer token (instead of user name and password).
        verify: TLS verification: True, False or a CA bundle path.
        timeout: seconds to wait for a connection or an answer.
        ae_title: the DIMSE peer's AE title.
        host: the DIMSE peer's host name or address.
        port: the DIMSE peer's port.
        calling_ae_title: our own AE title.
        move_ae: retrieve by C-MOVE to this AE title (our temporary Storage SCP), not by C-GET.
        move_port: the port that Storage SCP listens on (with ``move_ae``).
        tls: DIMSE over TLS (``verify`` checks the PACS's certificate).
        certificate: our certificate (PEM) for TLS, when the PACS asks for one.
        private_key: its private key (PEM).
        source: where the settings came from (named in errors).
    """

    protocol: Protocol
    url: str | None = None
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    token: Secret | None = field(default=None, repr=False)
    verify: bool | str = True
    timeout: float = 30.0
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    calling_ae_title: str = DEFAULT_CALLING_AE
    move_ae: str | None = None
    move_port: int | None = None
    tls: bool = False
    certificate: str | None = None
    private_key: str | None = None
    source: str = "settings"

    def describe(self) -> str:
        """A short, secret-free name of the peer for messages: the URL or ``AET@host:port``."""
        if self.protocol == "dicomweb":
            return str(self.url)
        return f"{self.ae_title}@{self.host}:{self.port}"


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PacsSettings:
    """Build the connection from a YAML file, ``MEDSEG_PACS_*`` variables and overrides (flags).

    Args:
        path: a settings file (default: ``$MEDSEG_PACS_FILE`` when set).
        overrides: values that win over file and environment, by key (None values are ignored).
        environ: the environment (default: ``os.environ``).

    Returns:
        The validated settings, secrets read.

    Raises:
        ConfigError: an unreadable file, an unknown key, a bad value, a missing peer or a
            secret that cannot be read; the message names the file or variable and the key.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = path if path is not None else environ.get(ENV_FILE) or None
    if path is not None:
        for key, value in read_settings_file(path).items():
            values[key], sources[key] = value, str(path)
    for key in KEYS:
        name = ENV_PREFIX + key.upper()
        if environ.get(name):
            values[key], sources[key] = environ[name], name
    for key, value in (overrides or {}).items():
        if key not in KEYS:
            raise ConfigError(f"unknown PACS setting {key!r}; known: {', '.join(KEYS)}")
        if value is not None:
            values[key], sources[key] = value, f"--{key.replace('_', '-')}"
    return _build(values, sources, environ)


def read_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The keys of a PACS settings YAML file, unknown keys refused.

    Raises:
        ConfigError: unreadable, not YAML, not a mapping, or an unknown key.
    """
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read PACS settings ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML in PACS settings") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: PACS settings are a mapping of keys (url, ae_title, ...), got {type(data).__name__}"
        )
    for key in data:
        if key not in KEYS:
            for secret in ("password", "token"):
                if key == secret:
                    raise ConfigError(
                        f"{path}: {key}: secrets do not go into the file; use {key}_env (a variable's name) "
                        f"or {key}_file (a file holding it)"
                    )
            raise ConfigError(f"{path}: unknown key {key!r}; known: {', '.join(KEYS)}")
    return dict(data)


def parse_peer(text: str, *, calling_ae_title: str = DEFAULT_CALLING_AE, timeout: float = 30.0) -> PacsSettings:
    """A DIMSE peer written as ``AET@HOST:PORT``.

    Raises:
        ConfigError: not of that form, or an invalid AE title or port.
    """
    match = re.fullmatch(r"(?P<aet>[^@]+)@(?P<host>[^:@]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)", text.strip())
    if match is None:
        raise ConfigError(f"peer {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@pacs.example.org:4242")
    values = {
        "protocol": "dimse",
        "ae_title": match["aet"],
        "host": match["host"].strip("[]"),
        "port": match["port"],
        "calling_ae_title": calling_ae_title,
        "timeout": timeout,
    }
    return _build(values, dict.fromkeys(values, f"peer {text!r}"), {})


def check_ae_title(value: object, where: str) -> str:
    """An AE title (1-16 printable characters, no backslash), stripped.

    Raises:
        ConfigError: anything else.
    """
    text = str(value).strip()
    if not _AE_TITLE.fullmatch(text):
        raise ConfigError(f"{where}: {text!r} is not an AE title (1 to 16 printable characters, no backslash)")
    return text


def _build(values: dict[str, Any], sources: dict[str, str], environ: Mapping[str, str]) -> PacsSettings:
    def where(key: str) -> str:
        return f"{sources.get(key, 'settings')}: {key}"

    protocol = values.get("protocol")
    if protocol is None:
        if values.get("url"):
            protocol = "dicomweb"
        elif values.get("host") or values.get("ae_title"):
            protocol = "dimse"
        else:
            raise ConfigError(
                "no PACS given: use --pacs FILE, --url (DICOMweb) or --host/--port/--ae-title (DIMSE), "
                f"or set {ENV_FILE}"
            )
    if protocol not in ("dicomweb", "dimse"):
        raise ConfigError(f"{where('protocol')}: {protocol!r} is not dicomweb or dimse")
    timeout = _number(values.get("timeout", 30.0), where("timeout"))
    calling = check_ae_title(values.get("calling_ae_title", DEFAULT_CALLING_AE), where("calling_ae_title"))
    common = {"timeout": timeout, "calling_ae_title": calling, "source": ", ".join(sorted(set(sources.values())))}
    if protocol == "dimse":
        missing = [k for k in ("ae_title", "host", "port") if not values.get(k)]
        if missing:
            raise ConfigError(f"{common['source']}: a DIMSE peer needs {', '.join(missing)} (given: {_given(values)})")
        port = _port(values["port"], where("port"))
        ae_title = check_ae_title(values["ae_title"], where("ae_title"))
        move_ae, move_port = values.get("move_ae") or None, values.get("move_port")
        move_port = None if move_port in (None, "") else move_port
        if (move_ae is None) != (move_port is None):
            given, missing = ("move_ae", "move_port") if move_ae else ("move_port", "move_ae")
            raise ConfigError(f"{where(given)}: C-MOVE needs both move_ae and move_port; {missing} is missing")
        tls = _flag(values.get("tls", False), where("tls"))
        certificate, private_key = (_file(values.get(k), where(k)) for k in ("certificate", "private_key"))
        if (certificate is None) != (private_key is None):
            given = "certificate" if certificate else "private_key"
            raise ConfigError(f"{where(given)}: TLS needs both certificate and private_key")
        if certificate and not tls:
            raise ConfigError(f"{where('certificate')}: a certificate is for DICOM over TLS; set tls: true")
        return PacsSettings(
            "dimse",
            ae_title=ae_title,
            host=str(values["host"]),
            port=port,
            move_ae=None if move_ae is None else check_ae_title(move_ae, where("move_ae")),
            move_port=None if move_port is None else _port(move_port, where("move_port")),
            verify=_verify(values.get("verify", True), where("verify")),
            tls=tls,
            certificate=certificate,
            private_key=private_key,
            **common,
        )
    url = str(values.get("url") or "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where('url')}: expected an http:// or https:// URL of the DICOMweb service")
    if parts.username or parts.password:
        raise ConfigError(
            f"{where('url')}: the URL must not carry credentials; use username with password_env or password_file"
        )
    password = _secret(values, sources, environ, "password", ENV_PASSWORD)
    token = _secret(values, sources, environ, "token", ENV_TOKEN)
    username = values.get("username")
    if password is not None and not username:
        key = "password_env" if "password_env" in values else "password_file"
        raise ConfigError(f"{where(key)}: a password needs a username")
    if username and password is None:
        raise ConfigError(f"{where('username')}: a username needs password_env or password_file (or {ENV_PASSWORD})")
    if token is not None and username:
        key = "token_env" if "token_env" in values else "token_file"
        raise ConfigError(f"{where(key)}: use a token or a user name, not both")
    return PacsSettings(
        "dicomweb",
        url=url.rstrip("/"),
        username=str(username) if username else None,
        password=password,
        token=token,
        verify=_verify(values.get("verify", True), where("verify")),
        **common,
    )


def _secret(
    values: Mapping[str, Any], sources: Mapping[str, str], environ: Mapping[str, str], name: str, direct: str
) -> Secret | None:
    env_key, file_key = f"{name}_env", f"{name}_file"
    if values.get(env_key) and values.get(file_key):
        raise ConfigError(f"{sources[file_key]}: {file_key}: give {env_key} or {file_key}, not both")
    if values.get(env_key):
        variable = str(values[env_key])
        value = environ.get(variable)
        if not value:
            raise ConfigError(f"{sources[env_key]}: {env_key}: the environment variable {variable} is not set")
        return Secret(value)
    if values.get(file_key):
        path = Path(str(values[file_key])).expanduser()
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{sources[file_key]}: {file_key}: cannot read {path} ({exc.strerror or exc})") from exc
        if not value:
            raise ConfigError(f"{sources[file_key]}: {file_key}: {path} is empty")
        return Secret(value)
    if environ.get(direct):
        return Secret(environ[direct])
    return None


def _verify(value: Any, where: str) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "yes", "1", "on"):
        return True
    if text.lower() in ("false", "no", "0", "off"):
        return False
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"{where}: expected true, false or a CA bundle file; {text!r} is not a file")
    return str(path)


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", ""):
        return False
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _file(value: Any, where: str) -> str | None:
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{where}: {value!r} is not a file")
    return str(path)


def _port(value: Any, where: str) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where}: {port} is not a port number (1-65535)")
    return port


def _number(value: Any, where: str) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a number of seconds") from None
    if not number > 0:
        raise ConfigError(f"{where}: must be above 0, got {number}")
    return number


def _given(values: Mapping[str, Any]) -> str:
    return ", ".join(k for k in KEYS if values.get(k) and not k.endswith(("_env", "_file"))) or "nothing"


def with_calling_ae_title(settings: PacsSettings, ae_title: str) -> PacsSettings:
    """The same settings with another calling AE title."""
    return replace(settings, calling_ae_title=check_ae_title(ae_title, "calling AE title"))
