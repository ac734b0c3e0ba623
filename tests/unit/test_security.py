"""API keys and the stream URL policy."""

import os

import pytest
from pydantic import SecretStr

from bigsister_ray.config import ApiKey, AuthConfig
from bigsister_ray.errors import ConfigError, StreamError
from bigsister_ray.security import Authenticator, UrlPolicy, load_keys

READ = ApiKey(name="viewer", key=SecretStr("r" * 24), scope="read")
WRITE = ApiKey(name="operator", key=SecretStr("w" * 24), scope="write")


def test_identify_scopes_and_unknown_keys():
    auth = Authenticator([READ, WRITE])
    assert auth.identify("r" * 24).scope == "read"
    assert auth.identify("w" * 24).allows("write")
    assert not auth.identify("r" * 24).allows("write")
    assert auth.identify("x" * 24) is None
    assert auth.identify(None) is None
    assert "r" * 24 not in repr(auth)


def test_extract_header_and_bearer():
    assert Authenticator.extract({"x-api-key": " k "}) == "k"
    assert Authenticator.extract({"authorization": "Bearer tok"}) == "tok"
    assert Authenticator.extract({"authorization": "Basic abc"}) is None


def test_short_key_refused():
    with pytest.raises(ValueError, match="too short"):
        ApiKey(name="x", key=SecretStr("short"))


def test_generated_key_written_once_with_private_mode(tmp_path):
    cfg = AuthConfig(generated_key_file=tmp_path / "key")
    first = load_keys(cfg)
    again = load_keys(cfg)
    assert first[0].key.get_secret_value() == again[0].key.get_secret_value()
    assert oct(os.stat(tmp_path / "key").st_mode & 0o777) == "0o600"


def test_keys_file_and_duplicate_names(tmp_path):
    f = tmp_path / "keys.yaml"
    f.write_text(f"- {{name: a, key: {'k' * 20}, scope: write}}\n- {{name: a, key: {'j' * 20}}}\n")
    with pytest.raises(ConfigError, match="unique"):
        load_keys(AuthConfig(keys_file=f))


@pytest.mark.parametrize(
    "url,allowed",
    [
        ("rtsp://cam.example.invalid/stream1", False),  # unresolvable and not in auth.allowed_hosts
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://127.0.0.1:8554/live", False),
        ("http://[::1]:8554/live", False),
        ("ftp://cam/x", False),
        ("gopher://cam/x", False),
        ("http://10.1.2.3:8265/api/jobs", False),
        ("rtsp://10.1.2.3:554/live", True),
        ("/srv/media/cam.mp4", True),
    ],
)
def test_url_policy(url, allowed):
    policy = UrlPolicy.from_config(AuthConfig())
    if allowed:
        policy.check(url)
    else:
        with pytest.raises(StreamError, match="refused|not allowed|reserved|not a camera"):
            policy.check(url)


def test_allow_loopback_and_allow_list():
    assert UrlPolicy(allow_loopback=True).check("http://127.0.0.1:9000/x") == "http"
    policy = UrlPolicy(allowed_hosts=["10.0.0.0/24"])
    policy.check("rtsp://10.0.0.7/live")
    with pytest.raises(StreamError, match="allowed_hosts"):
        policy.check("rtsp://10.0.1.7/live")
    with pytest.raises(StreamError, match="private"):
        UrlPolicy(allow_private=False).check("rtsp://192.168.1.20/live")
