"""How every Kafka client of the worker connects: the bootstrap servers and the security options
(TLS, SASL PLAIN / SCRAM) of ``stream_app.settings``, in aiokafka's keywords (``client_options``)
and as Faust's ``broker_credentials`` (``faust_credentials``). The consumers, producers, admin
clients, changelog readers, the owners lookup, Faust's own clients and the dev tools all take
them from here, so no client is left on another protocol.

>>> from stream_app.settings import Settings
>>> client_options(Settings(bootstrap_servers="k:9092"))
{'bootstrap_servers': 'k:9092', 'security_protocol': 'PLAINTEXT'}
>>> s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
...              kafka_sasl_username="alice", kafka_sasl_password="secret")
>>> o = security_options(s); o["security_protocol"], o["sasl_mechanism"], o["sasl_plain_username"], o["ssl_context"]
('SASL_PLAINTEXT', 'SCRAM-SHA-256', 'alice', None)
>>> faust_credentials(s)
<SASLCredentials: username=alice>
"""
from __future__ import annotations

import asyncio
import functools
import ssl
from pathlib import Path

from stream_app.settings import Settings, SettingsError, env_name


def client_options(settings: Settings) -> dict:
    """Keywords for any aiokafka client (consumer, producer, admin client) of these settings."""
    return {"bootstrap_servers": settings.bootstrap_servers, **security_options(settings)}


def security_options(settings: Settings) -> dict:
    """``security_protocol`` and, as the protocol needs them, ``ssl_context`` and the SASL
    keywords (``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password``)."""
    return dict(_security_options(settings))


@functools.lru_cache(maxsize=16)  # one TLS context per process, shared by every client
def _security_options(settings: Settings) -> tuple:
    protocol = settings.kafka_security_protocol
    out: dict = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL_"):
        out.update(ssl_context=out.get("ssl_context"), sasl_mechanism=settings.kafka_sasl_mechanism,
                   sasl_plain_username=settings.kafka_sasl_username, sasl_plain_password=sasl_password(settings))
    return tuple(out.items())


def sasl_password(settings: Settings) -> str:
    """The SASL password: the setting, or the content of the password file."""
    if settings.kafka_sasl_password:
        return settings.kafka_sasl_password
    name = env_name("kafka_sasl_password_file")
    try:
        text = Path(settings.kafka_sasl_password_file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{name}={settings.kafka_sasl_password_file}: cannot be read ({exc})") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise SettingsError(f"{name}={settings.kafka_sasl_password_file}: the file is empty")
    return text


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the broker's certificate (against ``KAFKA_SSL_CAFILE``, else the system's CAs)
    and, unless ``KAFKA_SSL_CHECK_HOSTNAME`` is false, that it names the host; presents a client
    certificate when one is set."""
    try:
        ctx = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"{env_name('kafka_ssl_cafile')}={settings.kafka_ssl_cafile}: not usable "
                            f"CA certificates ({exc})") from None
    if settings.kafka_ssl_certfile:
        try:
            ctx.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"{env_name('kafka_ssl_certfile')}={settings.kafka_ssl_certfile} / "
                                f"{env_name('kafka_ssl_keyfile')}={settings.kafka_ssl_keyfile}: not a usable "
                                f"certificate and key ({exc})") from None
    ctx.check_hostname = settings.kafka_ssl_check_hostname
    return ctx


def faust_credentials(settings: Settings):
    """Faust's ``broker_credentials`` for these settings (None: plaintext)."""
    import faust

    opts = security_options(settings)
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(opts["ssl_context"])
    if settings.kafka_security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=opts["sasl_plain_username"], password=opts["sasl_plain_password"],
                                     mechanism=opts["sasl_mechanism"], ssl_context=opts["ssl_context"])
    return None


async def login_problem(settings: Settings, timeout_s: float = 10.0) -> str | None:
    """Why the first bootstrap server refuses these settings' login (SASL or TLS), naming the
    settings to fix; None when it accepts them or cannot be reached at all (an outage)."""
    from aiokafka import errors
    from aiokafka.conn import create_conn

    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    protocol = f"{env_name('kafka_security_protocol')}={settings.kafka_security_protocol}"
    try:
        conn = await asyncio.wait_for(create_conn(host.strip("[]"), int(port), request_timeout_ms=int(timeout_s * 1000),
                                                  **security_options(settings)), timeout_s)
    except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError) as exc:
        return (f"the Kafka broker at {first} refused the login of {env_name('kafka_sasl_username')}="
                f"{settings.kafka_sasl_username} with {env_name('kafka_sasl_mechanism')}="
                f"{settings.kafka_sasl_mechanism} ({exc}): check {env_name('kafka_sasl_password')} "
                f"(or {env_name('kafka_sasl_password_file')}) and the mechanism")
    except (errors.UnsupportedSaslMechanismError, errors.IllegalSaslStateError) as exc:
        return f"{env_name('kafka_sasl_mechanism')}={settings.kafka_sasl_mechanism} ({protocol}): {exc}"
    except ssl.SSLError as exc:
        return (f"TLS with the Kafka broker at {first} failed ({exc}): check {protocol}, "
                f"{env_name('kafka_ssl_cafile')}, {env_name('kafka_ssl_certfile')} and "
                f"{env_name('kafka_ssl_check_hostname')}")
    except Exception:  # unreachable, or refused before any login: not something these settings explain
        return None
    conn.close()
    return None
