"""The one redactor (bigsister_ray.redact): a table of URLs and what may be shown of them, a property
test that a planted secret never survives, safe log lines, and the old names that now share the rules."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bigsister_ray.redact import REDACTED, is_secret_key, redact_text, redact_url, safe_log

# ---- the table ------------------------------------------------------------------------------------
CASES = [
    # userinfo: the whole of it goes (a lone userinfo is often a token)
    ("rtsp://admin:hunter2@10.0.0.5:554/Streaming/101", "rtsp://***@10.0.0.5:554/Streaming/101"),
    ("rtsps://admin@cam.example/live", "rtsps://***@cam.example/live"),
    ("https://ghp_tok3nvalue@git.example/x.mp4", "https://***@git.example/x.mp4"),
    ("http://u:p%40ss@cam/x.ts?token=abc123&ch=2", "http://***@cam/x.ts?token=***&ch=2"),
    ("postgresql+psycopg://bs:pw@db:5432/bs?sslmode=require", "postgresql+psycopg://***@db:5432/bs?sslmode=require"),
    ("s3://AKIA:verysecret@bucket/k?region=x&secret_key=abc&token=t", "s3://***@bucket/k?region=x&secret_key=***&token=***"),
    ("rtsp://admin:p%2Fw@[fe80::1]:554/x", "rtsp://***@[fe80::1]:554/x"),
    # query credentials, camera style (user names stay)
    ("http://cam/mjpeg?api_key=K1&user=bob&password=pw9", "http://cam/mjpeg?api_key=***&user=bob&password=***"),
    ("http://cam/cgi?PassWord=a&Pwd=b&passwd=c&pass=d&usr=e", "http://cam/cgi?PassWord=***&Pwd=***&passwd=***&pass=***&usr=e"),
    ("http://cam/x?SECRET=a&Auth=b&apikey=c&key=d&ch=1", "http://cam/x?SECRET=***&Auth=***&apikey=***&key=***&ch=1"),
    ("https://api.example/v?access_token=a&refresh-token=b&client_secret=c&scope=r",
     "https://api.example/v?access_token=***&refresh-token=***&client_secret=***&scope=r"),
    ("rtmp://live.example/app?stream_key=sk-1&quality=hd", "rtmp://live.example/app?stream_key=***&quality=hd"),
    ("http://cam/x?a=1;pwd=2", "http://cam/x?a=1;pwd=***"),
    ("http://cam/x?pass%77ord=enc&ch=1", "http://cam/x?pass%77ord=***&ch=1"),
    # query credentials, cloud style
    ("https://b.s3.amazonaws.com/v.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F2026&X-Amz-Date=20260101T000000Z"
     "&X-Amz-Expires=900&X-Amz-Security-Token=FwoG&X-Amz-Signature=deadbeef",
     "https://b.s3.amazonaws.com/v.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***&X-Amz-Date=20260101T000000Z"
     "&X-Amz-Expires=900&X-Amz-Security-Token=***&X-Amz-Signature=***"),
    ("https://b.s3.amazonaws.com/v.mp4?AWSAccessKeyId=AKIA&Expires=9&Signature=zz",
     "https://b.s3.amazonaws.com/v.mp4?AWSAccessKeyId=***&Expires=9&Signature=***"),
    ("https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=svc%40p&X-Goog-Signature=ab",
     "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=***&X-Goog-Signature=***"),
    ("https://a.blob.core.windows.net/c/v.mp4?sv=2022-11-02&se=2030-01-01&sp=r&sig=AbC%2Bd%3D",
     "https://a.blob.core.windows.net/c/v.mp4?sv=2022-11-02&se=2030-01-01&sp=r&sig=***"),
    # credentials in the path
    ("rtsp://10.0.0.2:554/user=admin&password=s3cr3t/ch1", "rtsp://10.0.0.2:554/user=admin&password=***/ch1"),
    ("rtsp://10.0.0.2:554/user=admin_password=tlJwpbo6_channel=1_stream=0.sdp",
     "rtsp://10.0.0.2:554/user=admin_password=***_channel=1_stream=0.sdp"),
    ("http://cam/api/token=abc123/snapshot.jpg", "http://cam/api/token=***/snapshot.jpg"),
    ("http://cam/live;jsessionid=42;pwd=x/a.ts", "http://cam/live;jsessionid=***;pwd=***/a.ts"),
    ("http://cam/%75ser%3Dadmin%26password%3Dpw/x", "http://cam/***/x"),
    # fragments: anything after "#" is hidden
    ("https://cam/x#access_token=zzz", "https://cam/x#***"),
    ("http://cam/v.mp4#t=10", "http://cam/v.mp4#***"),
    # harmless: unchanged
    ("http://cam.local:8080/live.ts?ch=1&fps=10", "http://cam.local:8080/live.ts?ch=1&fps=10"),
    ("https://cdn.example/img/file@2x.png", "https://cdn.example/img/file@2x.png"),
    ("https://cdn.example:8443/img/file@2x.png?w=2", "https://cdn.example:8443/img/file@2x.png?w=2"),
    ("videos/cam1.mp4", "videos/cam1.mp4"),
    ("file:///media/a.mp4", "file:///media/a.mp4"),
    ("sqlite:///bigsister.db", "sqlite:///bigsister.db"),
    ("", ""),
    # malformed: redacted more, never less, never an error
    ("rtsp://admin:ab#cd@host/x", "rtsp://***@host/x"),
    ("rtsp://admin:p/ss@host:554/x", "rtsp://***@host:554/x"),
    ("rtsp://admin:p?ss@host/x?ch=1", "rtsp://***@host/x?ch=1"),
    ("rtsp://admin:12/34@host/x", "rtsp://***@host/x"),
    ("rtsp://admin:pw", "rtsp://***"),
    ("http://[::1:554/x?token=a", "http://***/x?token=***"),
    ("http://host:80a/x", "http://***/x"),
    ("http://ho st/x", "http://***/x"),
]


@pytest.mark.parametrize("url, expected", CASES)
def test_redact_url_table(url, expected):
    assert redact_url(url) == expected


def test_the_table_is_large_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize("key", ["password", "PASSWD", "pwd", "pass", "secret", "token", "access_token", "auth", "key",
                                 "apikey", "api_key", "api-key", "sig", "signature", "X-Amz-Signature",
                                 "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature", "X-Goog-Credential"])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["user", "username", "ch", "channel", "sv", "se", "sp", "X-Amz-Date", "X-Amz-Expires",
                                 "expires", "monkey", "bypass", "subtype", "region"])
def test_not_secret_keys(key):
    assert not is_secret_key(key)


def test_redact_url_takes_paths_bytes_and_odd_objects():
    from pathlib import Path

    assert redact_url(Path("/data/a.mp4")) == "/data/a.mp4"
    assert redact_url(b"rtsp://a:b@h/x") == "rtsp://***@h/x"

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert redact_url(Hostile()) == REDACTED
    assert redact_text(Hostile()) == REDACTED


# ---- text ------------------------------------------------------------------------------------------
def test_redact_text_finds_urls_inside_messages_and_keeps_punctuation():
    raw = "rtsp://root:toor@192.168.1.9/h264"
    msg = f"Connection refused: '{raw}' (and http://a:b@c/d?sig=zz)."
    out = redact_text(msg, [raw])
    assert out == "Connection refused: 'rtsp://***@192.168.1.9/h264' (and http://***@c/d?sig=***)."


def test_redact_text_hides_the_known_urls_secrets_wherever_they_appear():
    raw = "rtsp://admin:Hunter%2F22@cam/x?token=tok-9999"
    msg = "401 for admin:Hunter/22 at cam/x?token=tok-9999; password Hunter/22 rejected"
    out = redact_text(msg, [raw])
    assert "Hunter" not in out and "tok-9999" not in out
    assert redact_text("rtsp://cam/x failed", [raw]) == "rtsp://cam/x failed"


# ---- the property ------------------------------------------------------------------------------------
_SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_SECRET = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=6, max_size=24).map(
    lambda s: "Zq" + s)
_SECRET_KEYS = st.sampled_from(["password", "PASSWORD", "passwd", "pwd", "Pass", "secret", "token", "access_token",
                                "auth", "key", "apikey", "api_key", "sig", "signature", "X-Amz-Signature",
                                "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature", "x-goog-credential"])


@st.composite
def planted(draw):
    """(url, secret): a random URL with ``secret`` in its userinfo, query, path or fragment."""
    secret = draw(_SECRET)
    scheme = draw(st.sampled_from(["rtsp", "rtsps", "http", "https", "s3", "gs", "postgresql"]))
    host = draw(st.sampled_from(["cam", "10.0.0.5", "[fe80::1]", "cam.example.org"]))
    port = draw(st.sampled_from(["", ":554", ":8080"]))
    path = "".join("/" + s for s in draw(st.lists(_SAFE, max_size=3)))
    params = [f"{k}={v}" for k, v in draw(st.lists(st.tuples(_SAFE.map(lambda k: "q" + k), _SAFE), max_size=3))]
    userinfo, fragment = "", ""
    where = draw(st.sampled_from(["password", "user", "user-raw", "query", "path", "fragment"]))
    enc = quote(secret, safe="")
    if where == "password":
        userinfo = f"{draw(_SAFE)}:{enc}@"
    elif where == "user":
        userinfo = f"{enc}@"
    elif where == "user-raw":  # unencoded, as people type them: / ? # @ and all
        userinfo = f"{draw(_SAFE)}:{secret.replace(chr(0), '')}@"
    elif where == "query":
        params.insert(draw(st.integers(0, len(params))), f"{draw(_SECRET_KEYS)}={enc}")
    elif where == "path":
        path += f"/user=admin&{draw(_SECRET_KEYS)}={enc}/x"
    else:
        fragment = "#" + secret
    query = ("?" + "&".join(params)) if params else ""
    return f"{scheme}://{userinfo}{host}{port}{path}{query}{fragment}", secret


@settings(max_examples=400, deadline=None)
@given(planted())
def test_a_planted_secret_never_survives(case):
    url, secret = case
    out = redact_url(url)
    for form in {secret, quote(secret, safe="")}:
        assert form not in out, (url, out)
    text = redact_text(f"error opening {url}: refused", [])
    assert secret not in text and quote(secret, safe="") not in text


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text().map(lambda s: "rtsp://" + s), st.binary().map(lambda b: "http://" + b.decode("latin-1"))),
       st.lists(st.text(), max_size=3))
def test_redaction_never_raises(text, urls):
    assert isinstance(redact_url(text), str)
    assert isinstance(redact_text(text, urls), str)
    assert isinstance(safe_log(text), str)


# ---- log lines ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("lobby", "lobby"),
        ("cam\nFAKE 00:00 INFO root: all good", "cam\\nFAKE 00:00 INFO root: all good"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("a\r\tb\x00\x7f\x85", "a\\r\\tb\\x00\\x7f\\x85"),
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("C:\\cams\\n1", "C:\\\\cams\\\\n1"),
        ("Café 東京", "Café 東京"),
    ],
)
def test_safe_log(text, expected):
    assert safe_log(text) == expected


# ---- one set of rules everywhere -----------------------------------------------------------------------
@pytest.mark.parametrize("url, expected", CASES[:12])
def test_every_old_name_uses_the_same_rules(url, expected):
    from bigsister_ray import storage
    from bigsister_ray.incidents import models
    from bigsister_ray.models.weights import redact_source
    from bigsister_ray.video import sources

    assert sources.redact_url(url) == models.redact_url(url) == storage.redact_uri(url) == redact_source(url) == expected


def test_streams_answer_shows_no_signed_url_credentials():
    from bigsister_ray.incidents.models import Stream, StreamPublic

    url = ("https://b.s3.amazonaws.com/v.m3u8?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Security-Token=FwoGZX"
           "&X-Amz-Signature=deadbeef&pwd=hunter2#token=frag")
    row = Stream(id="s1", name="gate", url=url, created_at=datetime.now(timezone.utc))
    shown = StreamPublic.from_row(row).model_dump_json()
    for secret in ("AKIAEXAMPLE", "FwoGZX", "deadbeef", "hunter2", "frag"):
        assert secret not in shown
    assert "b.s3.amazonaws.com/v.m3u8" in shown
