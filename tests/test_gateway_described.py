"""What describes an object through ``daulat serve``: the Content-Type and ``x-amz-meta-*`` a
client wrote come back from every replica that holds them in the clear, daulat's own fields
never do, and ``daulat copy`` keeps an S3 source's Content-Type. Real parts as in
test_gateway.py: the gateway as ``python -m daulat serve``, directories and SeaweedFS buckets,
boto3 as the client."""

from __future__ import annotations

import base64
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_gateway import MiB, _copy, _status, client, gateway
from test_gateway_writes import _config, _direct

from daulat.crypto import new_identity

pytestmark = pytest.mark.timeout(300)

META = {"owner": "kpu", "tps-id": "3201-07", "proof": "a client's, not daulat's"}


def _described(answer: dict[str, Any]) -> tuple[str, dict[str, str]]:
    return answer["ContentType"], answer["Metadata"]


def _headers(answer: dict[str, Any]) -> dict[str, str]:
    return dict(answer["ResponseMetadata"]["HTTPHeaders"])


def test_put_keeps_content_type_and_metadata_on_every_plain_replica(
    tmp_path: Path, s3_server: S3Server
) -> None:
    stores = [
        fs_store_config(tmp_path / "prim", "prim"),
        s3_store_config(s3_server, "vault", "gw-described"),
    ]
    # "arsip" reads the S3 replica alone: what it holds, as a gateway serving from it answers.
    config = _config(
        tmp_path,
        stores,
        {
            "pemilu": 'replicas = ["prim", "vault:arsip"]\nwritable = true',
            "arsip": 'replicas = ["vault:arsip"]',
        },
    )
    big = os.urandom(11 * MiB)
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(
            Bucket="pemilu", Key="c1/peta.png", Body=b"\x89PNG..", ContentType="image/png",
            Metadata=META,
        )  # fmt: skip
        s3.put_object(Bucket="pemilu", Key="plain.bin", Body=b"x")
        up = s3.create_multipart_upload(
            Bucket="pemilu", Key="c1/video.mp4", ContentType="video/mp4", Metadata={"n": "1"}
        )
        parts = []
        for n, piece in enumerate((big[: 6 * MiB], big[6 * MiB :]), 1):
            etag = s3.upload_part(
                Bucket="pemilu", Key="c1/video.mp4", UploadId=up["UploadId"], PartNumber=n,
                Body=piece,
            )["ETag"]  # fmt: skip
            parts.append({"PartNumber": n, "ETag": etag})
        s3.complete_multipart_upload(
            Bucket="pemilu", Key="c1/video.mp4", UploadId=up["UploadId"],
            MultipartUpload={"Parts": parts},
        )  # fmt: skip
        for bucket in ("pemilu", "arsip"):
            for answer in (
                s3.get_object(Bucket=bucket, Key="c1/peta.png"),
                s3.head_object(Bucket=bucket, Key="c1/peta.png"),
                s3.get_object(Bucket=bucket, Key="c1/peta.png", Range="bytes=1-2"),
            ):
                assert _described(answer) == ("image/png", META), bucket
            got = s3.get_object(Bucket=bucket, Key="c1/video.mp4")
            assert _described(got) == ("video/mp4", {"n": "1"}), bucket
            assert got["Body"].read() == big
            head = s3.head_object(Bucket=bucket, Key="plain.bin")
            assert _described(head) == ("application/octet-stream", {}), bucket
            # S3's response-* overrides, on a presigned URL as on any signed request.
            over = s3.get_object(
                Bucket=bucket, Key="c1/peta.png", ResponseContentType="text/plain",
                ResponseContentDisposition='attachment; filename="peta.png"',
            )  # fmt: skip
            assert over["ContentType"] == "text/plain"
            assert over["ContentDisposition"] == 'attachment; filename="peta.png"'
    # The client's metadata is held in daulat's field, apart from daulat's own.
    held = _direct(s3_server).head_object(Bucket="gw-described", Key="arsip/c1/peta.png")
    assert set(held["Metadata"]) == {"daulat_s3"}
    assert (tmp_path / "prim" / "c1" / "peta.png").read_bytes() == b"\x89PNG.."


def test_metadata_past_s3s_limit_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    stores = [fs_store_config(tmp_path / "prim", "prim"), fs_store_config(tmp_path / "b", "b")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "b"]\nwritable = true'})
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket="pemilu", Key="k", Body=b"x", Metadata={"big": "v" * 2046})
        assert _status(err.value) == 400
        assert err.value.response["Error"]["Code"] == "MetadataTooLarge"
        with pytest.raises(ClientError) as err:
            s3.create_multipart_upload(Bucket="pemilu", Key="k", Metadata={"big": "v" * 2046})
        assert err.value.response["Error"]["Code"] == "MetadataTooLarge"
        # At the limit (2,048 bytes of names and values) it is taken.
        s3.put_object(Bucket="pemilu", Key="k2", Body=b"x", Metadata={"big": "v" * 2045})
        assert s3.head_object(Bucket="pemilu", Key="k2")["Metadata"] == {"big": "v" * 2045}
    assert not (tmp_path / "prim" / "k").exists() and not (tmp_path / "b" / "k").exists()


def test_served_description_is_the_replicas_never_daulats_own_fields(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """An object another application wrote to the S3 primary is served with its Content-Type
    and metadata; the copy ``daulat copy`` made of it keeps the Content-Type and is served
    with it; daulat's own fields (sha256, proof) are never answered."""
    stores = [
        s3_store_config(s3_server, "kpu", "gw-described-src"),
        fs_store_config(tmp_path / "vault", "vault"),
    ]
    config = _config(
        tmp_path,
        stores,
        {"pemilu": 'replicas = ["kpu", "vault"]', "vault": 'replicas = ["vault"]'},
    )
    direct = _direct(s3_server)
    big = os.urandom(9 * MiB)  # streamed by the copy, not one PUT
    direct.put_object(
        Bucket="gw-described-src", Key="peta.png", Body=b"png", ContentType="image/png",
        Metadata={"owner": "kpu"},
    )  # fmt: skip
    direct.put_object(Bucket="gw-described-src", Key="big.mp4", Body=big, ContentType="video/mp4")
    _copy(config, "kpu", "vault")
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        primary = s3.head_object(Bucket="pemilu", Key="peta.png")
        assert _described(primary) == ("image/png", {"owner": "kpu"})
        for key, content_type in (("peta.png", "image/png"), ("big.mp4", "video/mp4")):
            for answer in (
                s3.get_object(Bucket="vault", Key=key),
                s3.head_object(Bucket="vault", Key=key),
            ):
                # The copy keeps the Content-Type (not the user metadata: see carried()),
                # and daulat's own fields are not answered as metadata.
                assert _described(answer) == (content_type, {}), key
                assert not [h for h in _headers(answer) if h.startswith("x-amz-meta-")], key
    # ...though the copy holds them (the test would pass for nothing otherwise).
    held = {n.removeprefix("user.daulat.") for n in os.listxattr(tmp_path / "vault" / "peta.png")}
    assert {"sha256", "proof", "s3"} <= held


def test_an_age_replica_is_given_the_bytes_only(tmp_path: Path) -> None:
    """A description in the clear beside ciphertext would tell the provider what the object
    is: the age replica holds none, and serves none once it is the one answering."""
    identity = tmp_path / "id.txt"
    vault = fs_store_config(tmp_path / "vault", "vault")
    vault["encrypt_to"] = [new_identity(identity)]
    stores = [fs_store_config(tmp_path / "prim", "prim"), vault]
    config = _config(
        tmp_path,
        stores,
        {"pemilu": 'replicas = ["prim", "vault"]\nwritable = true'},
        f'identity = "{identity}"',
    )
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(
            Bucket="pemilu", Key="rekap.pdf", Body=b"%PDF", ContentType="application/pdf",
            Metadata={"tps": "7"},
        )  # fmt: skip
        assert "user.daulat.s3" in os.listxattr(tmp_path / "prim" / "rekap.pdf")
        assert "user.daulat.s3" not in os.listxattr(tmp_path / "vault" / "rekap.pdf")
        (tmp_path / "prim").rename(tmp_path / "prim.off")
        got = s3.get_object(Bucket="pemilu", Key="rekap.pdf")
        assert got["Body"].read() == b"%PDF"
        assert _described(got) == ("application/octet-stream", {})


def test_what_a_lying_replica_plants_is_bounded_and_head_describes_as_get_serves(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """The provider of an S3 replica rewrites its copies' descriptions (the bytes intact):
    daulat's own names are never answered, a description past what a write could give is
    dropped, and HEAD describes the object from the replica GET serves it from (an age
    replica before the lying one: nothing), not from the first plain one."""
    identity = tmp_path / "id.txt"
    age = fs_store_config(tmp_path / "age", "age")
    age["encrypt_to"] = [new_identity(identity)]
    stores = [
        fs_store_config(tmp_path / "prim", "prim"),
        age,
        s3_store_config(s3_server, "vault", "gw-described-lie"),
    ]
    config = _config(
        tmp_path,
        stores,
        {
            "pemilu": 'replicas = ["prim:a", "vault:a"]\nwritable = true',
            "sealed": 'replicas = ["prim:b", "age:b", "vault:b"]\nwritable = true',
        },
        f'identity = "{identity}"',
    )
    described = {"ContentType": "text/plain", "Metadata": {"owner": "kpu"}}
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for key in ("b.txt", "c.txt", "d.txt", "f.txt"):
            s3.put_object(Bucket="pemilu", Key=key, Body=key.encode(), **described)
        s3.put_object(Bucket="sealed", Key="e.txt", Body=b"e.txt", **described)
        # Names with daulat's prefix are daulat's own: refused in a write.
        for name in ("daulat_s3", "daulat_proof", "daulat-x"):
            with pytest.raises(ClientError) as err:
                s3.put_object(Bucket="pemilu", Key="n.txt", Body=b"n", Metadata={name: "x"})
            assert (_status(err.value), err.value.response["Error"]["Code"]) == (
                400,
                "InvalidArgument",
            ), name
    direct = _direct(s3_server)
    field = "content-type=text%2Fhtml&x-amz-meta-daulat_proof=planted&x-amz-meta-sha256=m"
    planted: dict[str, dict[str, Any]] = {
        "a/b.txt": {"Metadata": {"daulat_s3": field + "&x-amz-meta-ok=1"}},
        "a/c.txt": {"Metadata": {"daulat_s3": "x-amz-meta-a=" + "v" * 7000}},
        "a/d.txt": {
            "ContentType": "text/html",
            "Metadata": {"daulat_sha256": "0" * 64, "daulat_proof": "planted", "ok": "1"},
        },
        "b/e.txt": {"Metadata": {"daulat_s3": "content-type=text%2Fhtml&x-amz-meta-owner=m"}},
    }
    for key, lie in planted.items():
        body = key.split("/")[1].encode()
        direct.put_object(Bucket="gw-described-lie", Key=key, Body=body, **lie)
    # Replaced by bytes of another size: not the object recorded, so not what HEAD describes.
    direct.put_object(
        Bucket="gw-described-lie",
        Key="a/f.txt",
        Body=b"another size",
        Metadata={"daulat_s3": "content-type=text%2Fhtml&x-amz-meta-evil=1"},
    )
    (tmp_path / "prim").rename(tmp_path / "prim.off")
    expected = {
        # The provider's word, within bounds; never daulat's own names.
        ("pemilu", "b.txt"): ("text/html", {"sha256": "m", "ok": "1"}),
        ("pemilu", "c.txt"): ("application/octet-stream", {}),
        ("pemilu", "d.txt"): ("text/html", {"ok": "1"}),
        ("sealed", "e.txt"): ("application/octet-stream", {}),
    }
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        for (bucket, key), want in expected.items():
            got = s3.get_object(Bucket=bucket, Key=key)
            assert got["Body"].read() == key.encode()
            assert _described(got) == want, key
            assert _described(s3.head_object(Bucket=bucket, Key=key)) == want, key
        replaced = s3.head_object(Bucket="pemilu", Key="f.txt")
        assert _described(replaced) == ("application/octet-stream", {})


def _word(text: str, charset: str = "UTF-8") -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def test_non_ascii_metadata_is_answered_as_s3_does_rfc_2047_never_raw_bytes(
    tmp_path: Path,
) -> None:
    """boto3 refuses non-ASCII metadata, so its users send RFC 2047 encoded words; S3 keeps
    the text they encode and answers any value that is not ASCII as an encoded word of its
    UTF-8. A replica's planted value is answered so too; control characters never are."""
    stores = [fs_store_config(tmp_path / n, n) for n in ("prim", "rep")]
    config = _config(tmp_path, stores, {"pemilu": 'replicas = ["prim", "rep"]\nwritable = true'})
    text = "Jakarta é 中文 📈"
    sent = {
        "nama": _word(text),
        "kota": "=?ISO-8859-1?Q?caf=E9_au_lait?=",
        "two": _word("é") + " " + _word("中"),  # adjacent words: the space between goes
        "plain": "ascii only",
        "literal": "=?UTF-8?B?not base64!?=",  # no encoded word: kept as written
    }
    answered = {
        "nama": _word(text),
        "kota": _word("café au lait"),
        "two": _word("é中"),
        "plain": "ascii only",
        "literal": "=?UTF-8?B?not base64!?=",
    }
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        s3.put_object(Bucket="pemilu", Key="a.txt", Body=b"a", Metadata=sent)
        for got in (
            s3.get_object(Bucket="pemilu", Key="a.txt"),
            s3.head_object(Bucket="pemilu", Key="a.txt"),
        ):
            assert got["Metadata"] == answered
            assert all(v.isascii() for v in _headers(got).values())
        # Each replica holds the text itself, as S3 would.
        for root in ("prim", "rep"):
            field = os.getxattr(tmp_path / root / "a.txt", "user.daulat.s3").decode()
            assert ("x-amz-meta-nama=" + urllib.parse.quote_plus(text)) in field, field
        # A value that decodes to control characters is no metadata: 400, written nowhere.
        for bad in (_word("a\r\nX-Injected: 1"), _word("a\x00b")):
            with pytest.raises(ClientError) as err:
                s3.put_object(Bucket="pemilu", Key="bad.txt", Body=b"b", Metadata={"x": bad})
            assert _status(err.value) == 400
        assert not (tmp_path / "prim" / "bad.txt").exists()
    # What a replica's provider planted: text beyond Latin-1 and Latin-1 alike go encoded;
    # a value that would end the header is dropped.
    planted = "&".join(
        f"x-amz-meta-{n}={urllib.parse.quote(v)}"
        for n, v in [
            ("city", "é"), ("han", "中文"), ("crlf", "a\r\nX-Injected: 1"), ("nul", "a\x00"),
            ("c1", "a\x85b"), ("ok", "1"),
        ]
    )  # fmt: skip
    os.setxattr(tmp_path / "prim" / "a.txt", "user.daulat.s3", planted.encode())
    with gateway(config) as endpoint:
        s3 = client(endpoint)
        got = s3.head_object(Bucket="pemilu", Key="a.txt")
        assert got["Metadata"] == {"city": _word("é"), "han": _word("中文"), "ok": "1"}
        raw = _raw_head(endpoint, s3, "pemilu", "a.txt")
        assert b"x-injected" not in raw.lower() and raw.isascii(), raw
        assert b"x-amz-meta-city: =?UTF-8?B?w6k=?=" in raw


def _raw_head(endpoint: str, s3: Any, bucket: str, key: str) -> bytes:
    """The response head of a GET as it crossed the wire."""
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), 10) as sock:
        sock.sendall(
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n\r\n")[0]


def test_metadata_header_values_never_carry_raw_bytes_or_line_breaks() -> None:
    from daulat.stores.described import from_header, header_value

    for value in ("plain", "é", "中文 📈", "a\r\nX-Injected: 1", "a\x00b", "tab\there"):
        sent = header_value(value)
        assert sent.isascii() and not set(sent) & {"\r", "\n", "\x00"}, sent
        assert from_header(sent) == value
    assert header_value("plain") == "plain"
    # Q encoding, lower-case charset names, and a word that does not decode kept as written.
    assert from_header("=?utf-8?q?caf=C3=A9_?=") == "café "
    assert from_header("=?x-unknown?B?w6k=?=") == "=?x-unknown?B?w6k=?="
