"""Broker authentication settings: refused when incomplete, and the same TLS and SASL
arguments for every client, the Faust worker's included."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from services.cli import main
from services.common import kafka
from services.common.worker import broker_credentials
from services.settings import Settings, get_settings
from tests import tls

REMOTE = "kafka-1.example.org:9093,kafka-2.example.org:9093"


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> tls.Material:
    return tls.make(tmp_path_factory.mktemp("tls"))


def sasl_ssl(material: tls.Material, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": REMOTE,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "carecoord-relay",
        "kafka_sasl_password": "relay-password",
        "kafka_ssl_cafile": material.ca,
    }
    return Settings(**(values | changes))


def refusal(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return str(caught.value)


def test_a_sasl_protocol_without_a_username_and_password_is_refused_naming_both() -> None:
    for protocol in ("SASL_SSL", "SASL_PLAINTEXT"):
        message = refusal(kafka_security_protocol=protocol, kafka_sasl_username="relay")
        assert "CARECOORD_KAFKA_SASL_USERNAME and CARECOORD_KAFKA_SASL_PASSWORD" in message
        message = refusal(kafka_security_protocol=protocol, kafka_sasl_password="pw")
        assert f"CARECOORD_KAFKA_SECURITY_PROTOCOL={protocol} needs" in message


def test_credentials_or_certificates_the_protocol_would_not_use_are_refused(
    material: tls.Material,
) -> None:
    message = refusal(kafka_sasl_username="relay", kafka_sasl_password="pw")
    assert "does not use them" in message and "pw" not in message
    assert "does not use TLS" in refusal(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="relay",
        kafka_sasl_password="pw",
        kafka_ssl_cafile=material.ca,
    )
    assert "go together" in refusal(
        kafka_security_protocol="SSL", kafka_ssl_certfile=material.client_cert
    )
    # A missing file is a startup error too, not a failure at the first connection.
    assert "kafka_ssl_cafile" in refusal(
        kafka_security_protocol="SSL", kafka_ssl_cafile=material.ca.with_name("absent.pem")
    )
    assert "kafka_sasl_mechanism" in refusal(kafka_sasl_mechanism="SCRAM-SHA-1")
    # Empty values (an env file's blank line, an empty secret file) mean unset.
    assert Settings(kafka_sasl_username="", kafka_sasl_password="").kafka_sasl_password is None


async def test_every_client_connects_with_the_configured_tls_and_sasl(
    material: tls.Material,
) -> None:
    settings = sasl_ssl(
        material, kafka_ssl_certfile=material.client_cert, kafka_ssl_keyfile=material.client_key
    )
    options = kafka.security_options(settings)
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "carecoord-relay",
        "sasl_plain_password": "relay-password",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # The CA given, and only it, is trusted.
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]

    producer = kafka.make_producer(settings)
    consumer = kafka.make_consumer(settings, "care.events")
    for client in (producer.client, consumer._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "carecoord-relay"
        assert client._sasl_plain_password == "relay-password"
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._bootstrap_servers == REMOTE
    await producer.stop()
    await consumer.stop()


def test_plaintext_passes_no_tls_or_sasl_arguments() -> None:
    assert kafka.security_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(Settings()) is None


def test_the_faust_worker_gets_the_same_arguments_as_every_other_client(
    material: tls.Material,
) -> None:
    cases = [
        sasl_ssl(material),
        sasl_ssl(
            material,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_ssl_cafile=None,
            kafka_sasl_mechanism="SCRAM-SHA-256",
        ),
        sasl_ssl(
            material,
            kafka_security_protocol="SSL",
            kafka_sasl_username=None,
            kafka_sasl_password=None,
            kafka_ssl_certfile=material.client_cert,
            kafka_ssl_keyfile=material.client_key,
        ),
        Settings(),
    ]
    for settings in cases:
        ours = kafka.security_options(settings)
        # What Faust's own driver hands aiokafka for these credentials.
        faust = dict(credentials_to_aiokafka_auth(broker_credentials(settings)))
        ours_context, faust_context = ours.pop("ssl_context", None), faust.pop("ssl_context", None)
        assert {k: v for k, v in faust.items() if v is not None} == ours
        assert (ours_context is None) == (faust_context is None)
        if isinstance(faust_context, ssl.SSLContext):
            assert faust_context.get_ca_certs() == ours_context.get_ca_certs()  # type: ignore[union-attr]


def test_plain_passwords_and_unencrypted_traffic_over_the_network_are_warned_about(
    material: tls.Material,
) -> None:
    plain = sasl_ssl(
        material,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_ssl_cafile=None,
        kafka_sasl_mechanism="PLAIN",
    )
    warnings = kafka.security_warnings(plain)
    assert any("password in clear" in w for w in warnings)
    assert any("unencrypted" in w for w in warnings)
    assert not any(
        "password in clear" in w
        for w in kafka.security_warnings(
            plain.model_copy(update={"kafka_sasl_mechanism": "SCRAM-SHA-512"})
        )
    )
    assert "no authentication" in " ".join(
        kafka.security_warnings(Settings(kafka_bootstrap=REMOTE))
    )
    assert kafka.security_warnings(sasl_ssl(material)) == []
    assert "CHECK_HOSTNAME" in " ".join(
        kafka.security_warnings(sasl_ssl(material, kafka_ssl_check_hostname=False))
    )
    # A broker on this machine (development, the embedded broker) is not warned about.
    for local in ("127.0.0.1:9092", "localhost:9092", "[::1]:9092,127.0.0.2:9092"):
        assert kafka.security_warnings(plain.model_copy(update={"kafka_bootstrap": local})) == []


def test_a_bad_broker_setting_stops_the_command_with_one_line_and_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CARECOORD_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CARECOORD_KAFKA_SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setattr(sys, "argv", ["carecoord", "relay"])
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as stopped:
            main()
    finally:
        get_settings.cache_clear()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("carecoord: invalid setting: ")
    assert "CARECOORD_KAFKA_SASL_USERNAME" in err and "Traceback" not in err
    assert "hunter2" not in err and len(err.strip().splitlines()) == 1


async def test_up_refuses_a_secured_protocol_with_the_plaintext_embedded_broker(
    material: tls.Material, tmp_path: Path
) -> None:
    from services.supervisor import StartupError, Supervisor

    settings = sasl_ssl(material, kafka_bootstrap=None)
    with pytest.raises(StartupError, match="CARECOORD_KAFKA_BOOTSTRAP"):
        await Supervisor(settings, say=lambda _: None)._kafka(tmp_path)
