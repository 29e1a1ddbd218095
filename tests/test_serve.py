"""`torchclip serve` end to end: a real server process on 127.0.0.1 with the bundled model over generated photos
embedded by `torchclip embed` - each query kind, paging, filters, errors, files, token, live updates, hostile
requests, load and overload."""

from __future__ import annotations

import base64
import io
import os
import socket
import statistics
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_support import CLASSES, has_bundled_model, paging_server, shared_server, synthetic_photos, torchclip

from torchclip.hub import bundled_model_path

pytestmark = pytest.mark.skipif(not has_bundled_model(), reason="needs the bundled model (its queries are checked)")


@pytest.fixture(scope="module")
def main():
    return shared_server("main")


@pytest.fixture(scope="module")
def api(main):
    with main.client() as client:
        yield client


def label_of(key: str) -> str:
    return Path(key).stem.rsplit("_", 1)[0].replace("_", " ")


def search(api: httpx.Client, **body) -> dict:
    response = api.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def photo_bytes(server, name: str) -> bytes:
    return (server.photos / name).read_bytes()


# ---------------------------------------------------------------------- queries


def test_text_query_finds_the_described_photos(api, main):
    answer = search(api, text="a photo of a blue square", k=3)
    assert [label_of(r["key"]) for r in answer["results"]] == ["blue square"] * 3
    first = answer["results"][0]
    assert set(first) >= {"id", "key", "score", "width", "height", "thumbnail", "image"}
    assert first["thumbnail"] == f"/api/thumbnail/{first['id']}" and (first["width"], first["height"]) == (64, 64)
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
    assert isinstance(answer["generation"], int) and answer["took_ms"] >= 0
    assert answer["total"] == 3 and answer["next_offset"] == 3


def test_image_query_ranks_the_same_file_first(api, main):
    data = photo_bytes(main, "yellow_square_1.jpg")
    answer = search(api, image=base64.b64encode(data).decode(), k=4)
    assert Path(answer["results"][0]["key"]).name == "yellow_square_1.jpg"
    assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [label_of(r["key"]) for r in answer["results"][:3]] == ["yellow square"] * 3
    as_data_url = search(api, image="data:image/jpeg;base64," + base64.b64encode(data).decode(), k=4)
    assert [r["id"] for r in as_data_url["results"]] == [r["id"] for r in answer["results"]]


def test_more_like_this_by_id_key_and_vector(api, main):
    seed = search(api, text="a green star", k=1)["results"][0]
    by_id = search(api, id=seed["id"], k=3)
    by_key = search(api, key=seed["key"], k=3)
    assert [r["id"] for r in by_id["results"]] == [r["id"] for r in by_key["results"]]
    assert by_id["results"][0]["id"] == seed["id"] and by_id["results"][0]["score"] == pytest.approx(1, abs=1e-5)
    assert [label_of(r["key"]) for r in by_id["results"]] == ["green star"] * 3
    stats = api.get("/api/stats").json()
    vector = [0.0] * stats["model"]["dim"]
    vector[0] = 1.0
    by_vector = search(api, vector=vector, k=5)
    assert len(by_vector["results"]) == 5


def test_paging_is_the_ranking_cut_into_pages(api, main):
    whole = search(api, text="a red circle", k=50)["results"]
    assert len(whole) == api.get("/api/stats").json()["rows"] == 14
    pages = [search(api, text="a red circle", k=5, offset=offset) for offset in (0, 5, 10)]
    assert [r["id"] for page in pages for r in page["results"]] == [r["id"] for r in whole]
    assert [p["next_offset"] for p in pages] == [5, 10, None] and [len(p["results"]) for p in pages] == [5, 5, 4]
    assert search(api, text="a red circle", k=5, offset=20)["results"] == []


def test_filters_and_min_score(api, main):
    png = search(api, text="a green star", k=20, where="key LIKE '%.png'")["results"]
    assert [Path(r["key"]).name for r in png] == ["green_star_0.png"]
    wide = search(api, text="a green star", k=50, where="width > 1000")
    assert wide["results"] == [] and wide["next_offset"] is None
    everything = search(api, text="a yellow square", k=50)["results"]
    cut = everything[3]["score"]
    above = search(api, text="a yellow square", k=50, min_score=cut)["results"]
    assert [r["id"] for r in above] == [r["id"] for r in everything if r["score"] >= cut] and len(above) >= 4


def all_pages(api: httpx.Client, k: int, **body) -> tuple[list[dict], list[dict]]:
    """(results, answers) of following next_offset from offset 0 to the last page."""
    results, answers, offset = [], [], 0
    while offset is not None and len(answers) <= 200:
        answers.append(search(api, k=k, offset=offset, **body))
        results += answers[-1]["results"]
        offset = answers[-1]["next_offset"]
    return results, answers


@pytest.mark.parametrize("kind", ["all", "where", "min_score"])
def test_pages_of_any_size_are_one_request_for_all_cut_up(kind):
    """Paging through duplicates (equal scores at every page boundary) neither repeats nor skips a result:
    the pages, whatever k, are exactly the one answer for everything, with and without filters."""
    with paging_server().client() as api:
        query = {"text": "a red circle"}
        unfiltered = search(api, **query, k=1000)["results"]
        assert len(unfiltered) == 150
        cut = unfiltered[62]["score"] - 5e-7  # scores are rounded to 6 digits: just below the 63rd
        filters, expected = {
            "all": ({}, unfiltered),
            "where": ({"where": "width >= 35"}, [r for r in unfiltered if r["width"] >= 35]),
            "min_score": ({"min_score": cut}, [r for r in unfiltered if r["score"] >= cut]),
        }[kind]
        whole = search(api, **query, **filters, k=1000)
        everything = whole["results"]
        assert {r["id"] for r in everything} == {r["id"] for r in expected} and len(everything) == len(expected)
        assert whole["next_offset"] is None and whole["total"] == len(everything) >= 63
        scores = [r["score"] for r in everything]
        assert scores == sorted(scores, reverse=True)
        assert sum(a == b for a, b in zip(scores, scores[1:])) >= len(everything) // 3  # the copies tie
        for k in (1, 7, 40):
            results, answers = all_pages(api, k, **query, **filters)
            assert [r["id"] for r in results] == [r["id"] for r in everything], f"k={k}"
            assert len(answers) == -(-len(everything) // k)  # no empty page after the last one
            assert [a["total"] for a in answers] == [min(len(everything), k * n) for n in range(1, len(answers) + 1)]
            assert all(a["generation"] == whole["generation"] for a in answers)


def test_next_offset_never_points_past_the_largest_offset(tmp_path):
    """A store deeper than the largest offset (10,000): the last page reachable says it is the last."""
    from starlette.testclient import TestClient

    from torchclip.serve.app import MAX_OFFSET, ServeSettings, create_app
    from torchclip.store import EmbeddingStore

    model = {"dim": 4, "name": str(bundled_model_path())}
    store = EmbeddingStore.create(tmp_path / "deep.emb", model=model)
    rows = MAX_OFFSET + 5
    store.add([f"row{n}" for n in range(rows)], np.random.default_rng(0).normal(size=(rows, 4)))
    with TestClient(create_app(ServeSettings(store=str(tmp_path / "deep.emb"))), base_url="http://127.0.0.1") as client:

        def page(offset: int) -> dict:
            response = client.post("/api/search", json={"vector": [1, 0, 0, 0], "k": 1, "offset": offset})
            assert response.status_code == 200, response.text
            return response.json()

        assert page(MAX_OFFSET - 1)["next_offset"] == MAX_OFFSET
        last = page(MAX_OFFSET)
        assert len(last["results"]) == 1 and last["next_offset"] is None and last["total"] == MAX_OFFSET + 1


def test_weighted_combination_moves_the_ranking(api, main):
    plain = search(api, queries=[{"text": "a square", "weight": 1}], k=6)["results"]
    assert plain == search(api, text="a square", k=6)["results"]
    away_from_blue = search(
        api, queries=[{"text": "a square", "weight": 1}, {"text": "a blue square", "weight": -1}], k=3
    )["results"]
    assert "blue square" not in [label_of(r["key"]) for r in away_from_blue]
    mixed = search(api, queries=[{"text": "a red circle"}, {"id": plain[0]["id"], "weight": 0.5}], k=3)
    assert len(mixed["results"]) == 3


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({}, 400, "exactly one"),
        ({"text": "a", "id": 1}, 400, "exactly one"),
        ({"text": "   "}, 400, "empty"),
        ({"image": "not base64!"}, 400, "base64"),
        ({"image": base64.b64encode(b"GIF89a not really").decode()}, 400, "not a readable image"),
        ({"text": "a", "k": 0}, 400, "k"),
        ({"text": "a", "k": 1001}, 400, "k"),
        ({"text": "a", "offset": -1}, 400, "offset"),
        ({"text": "a", "min_score": 2}, 400, "min_score"),
        ({"text": "a", "where": "no_such_column > 1"}, 400, "filter"),
        ({"text": "a", "colour": "red"}, 400, "unknown field 'colour'"),
        ({"vector": [1.0, 2.0]}, 400, "numbers"),
        ({"queries": []}, 400, "empty"),
        ({"queries": [{"text": "a", "weight": 1}, {"text": "a", "weight": -1}]}, 400, "cancel"),
        ({"id": 987654}, 404, "no stored item"),
        ({"key": "/no/such/file.jpg"}, 404, "no stored item"),
    ],
)
def test_bad_searches_get_their_status_and_a_reason(api, body, status, words):
    response = api.post("/api/search", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert "Traceback" not in response.text


def test_malformed_json_and_unknown_routes(api):
    response = api.post("/api/search", content=b'{"text": "a"', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    assert api.get("/api/thumbnail/424242").status_code == 404
    assert api.get("/api/image/not-a-number").json()["error"].startswith("no stored item")
    assert api.get("/api/nothing").status_code == 404


def test_thumbnail_and_original_bytes_with_etag(api, main):
    hit = search(api, text="a red circle", k=1)["results"][0]
    original = api.get(hit["image"])
    assert original.status_code == 200 and original.content == Path(hit["key"]).read_bytes()
    assert original.headers["content-type"] == "image/jpeg" and original.headers["etag"]
    again = api.get(hit["image"], headers={"if-none-match": original.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    thumbnail = api.get(hit["thumbnail"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumbnail.content))
    assert image.format == "JPEG" and max(image.size) <= 256
    assert "max-age" in thumbnail.headers["cache-control"]
    cached = list((main.store / ".thumbnails").glob(f"{hit['id']}-*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == thumbnail.content
    assert api.get(hit["thumbnail"], headers={"if-none-match": thumbnail.headers["etag"]}).status_code == 304
    item = api.get(f"/api/item/{hit['id']}").json()
    assert item["key"] == hit["key"] and item["size"] == len(original.content) and item["image"] == hit["image"]


def test_stats_health_and_metrics(api, main):
    search(api, text="a red circle", k=1)
    stats = api.get("/api/stats").json()
    assert stats["rows"] == 3 * len(CLASSES) + 2 and stats["kind"] == "image"
    assert stats["model"]["dim"] > 0 and isinstance(stats["generation"], int) and "type" in stats["index"]
    assert api.get("/healthz").json()["ok"] is True
    metrics = api.get("/metrics").text
    for name in (
        "torchclip_requests_total",
        "torchclip_request_seconds_bucket",
        "torchclip_queue_depth",
        "torchclip_batch_seconds_bucket",
    ):
        assert name in metrics
    openapi = api.get("/openapi.json").json()
    assert "/api/search" in openapi["paths"] and "SearchRequest" in str(openapi["components"])


def test_security_headers_and_no_cors(api):
    response = api.get("/", headers={"origin": "http://evil.example"})
    assert response.status_code == 200 and "<title>torchclip search</title>" in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in response.headers
    assert api.get("/api/stats", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding


# ---------------------------------------------------------------------- hostile requests


def raw_request(server, data: bytes, half_close: bool = False) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(data)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and not half_close:
                break
    return answer


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (an image bomb's first bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_hostile_requests_get_4xx_and_the_service_stays_healthy(api, main):
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    truncated_jpeg = photo_bytes(main, "red_circle_0.jpg")[:300]
    cases = [
        ("GET", "/api/image/..%2F..%2F..%2Fetc%2Fpasswd", None, 404),
        ("GET", "/api/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd", None, 404),
        ("GET", "/api/image/....%2F%2F....%2F%2Fetc%2Fpasswd", None, 404),
        ("GET", "/api/thumbnail/%252e%252e%252fetc%252fpasswd", None, 404),
        ("GET", "/api/image/-1", None, 404),
        ("GET", "/api/image/1e3", None, 404),
        ("GET", "/api/image/99999999999999999999999999", None, 404),
        ("GET", "/api/image/%00", None, 404),
        ("GET", "/api/image/\u0661\u0662", None, 404),  # Arabic-Indic digits are not an id
        ("GET", "/static/%2e%2e/app.py", None, 404),
        ("GET", "/api/stats?" + "a" * 5000, None, 414),
        ("DELETE", "/api/search", None, 405),
        ("POST", "/api/search", {"image": b64(png_claiming(60000, 60000))}, 400),
        ("POST", "/api/search", {"image": b64(truncated_jpeg)}, 400),
        ("POST", "/api/search", {"image": b64(b"<svg onload=alert(1)></svg>")}, 400),
        ("POST", "/api/search", {"text": "a", "k": 10**12}, 400),
        ("POST", "/api/search", {"text": "a", "k": "\u0000"}, 400),
        ("POST", "/api/search", {"text": "a", "offset": -(10**9)}, 400),
        ("POST", "/api/search", {"text": "a\u0000b"}, 400),
        ("POST", "/api/search", {"key": "\u0000/etc/passwd"}, 400),
        ("POST", "/api/search", {"key": "../../../etc/passwd"}, 404),
        ("POST", "/api/search", {"text": "a", "where": "key = '\u0000'"}, 400),
        ("POST", "/api/search", {"text": "\U0001f600" * 5000}, 400),
        ("POST", "/api/search", {"vector": ["\u0000"]}, 400),
        ("POST", "/api/search", {"queries": [{"text": "a"}] * 100}, 400),
        ("POST", "/api/search", {"id": "\u202e1"}, 400),
        ("POST", "/api/search", [["nested"] * 3] * 3, 400),
    ]
    for method, path, body, status in cases:
        response = api.request(method, path, json=body)
        assert response.status_code == status, (method, path, str(body)[:80], response.text[:200])
        assert response.headers["content-type"].startswith("application/json") and "error" in response.json()
        assert "Traceback" not in response.text
    wrong_types = [
        (b'{"text": "a"}', "text/plain"),
        (b"text=a", "application/x-www-form-urlencoded"),
        (b"--x\r\nContent-Disposition: form-data; name=text\r\n\r\na\r\n--x--", "multipart/form-data; boundary=x"),
        (b"[" * 50000 + b"]" * 50000, "application/json"),
        (b"\xff\xfe\x00{", "application/json"),
        (b'{"vector": [NaN, NaN, Infinity, 1]}', "application/json"),
    ]
    for content, content_type in wrong_types:
        response = api.post("/api/search", content=content, headers={"content-type": content_type})
        assert response.status_code == 400, (content_type, response.text[:200])
    raw = [
        b"GET /static/../../../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /api/image/../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 999999999999\r\n\r\n{",
        b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: abc\r\n\r\n{}",
    ]
    for request in raw:
        answer = raw_request(main, request)
        assert answer.split(b" ", 2)[1] in (b"400", b"404", b"413"), answer[:200]
    # a body shorter than its Content-Length, then the client stops sending: no hang, no crash
    truncated = (
        b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"text": "a'
    )
    answer = raw_request(main, truncated, half_close=True)
    assert answer == b"" or answer.split(b" ", 2)[1] == b"400", answer[:200]
    assert len(cases) + len(wrong_types) + len(raw) + 1 >= 20
    assert api.get("/healthz").status_code == 200
    assert search(api, text="a blue square", k=1)["results"][0]["key"].endswith(".jpg")


# ---------------------------------------------------------------------- token, binding


def test_token_required_when_set_and_cookie_sign_in():
    live = shared_server("live")
    with httpx.Client(base_url=live.url, timeout=30) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        refused = anonymous.post("/api/search", json={"text": "a red circle"})
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        assert anonymous.get("/api/stats", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/api/thumbnail/0").status_code == 401
        assert anonymous.post("/api/login", json={"token": "wrong"}).status_code == 401
        signed_in = anonymous.post("/api/login", json={"token": live.token})
        assert signed_in.status_code == 200 and "httponly" in signed_in.headers["set-cookie"].lower()
        assert anonymous.get("/api/stats").status_code == 200  # the cookie now
    with live.client() as client:
        assert client.post("/api/search", json={"text": "a red circle", "k": 1}).status_code == 200


def test_uploads_over_max_upload_get_413():
    live = shared_server("live")  # --max-upload 1 (MB)
    with live.client() as client:
        image = base64.b64encode(os.urandom(1_200_000)).decode()  # 1.6 MB of JSON: within the body limit
        response = client.post("/api/search", json={"image": image})
        assert response.status_code == 413 and "larger than 1,048,576 bytes" in response.json()["error"]
        body = b'{"image": "' + b"A" * 3_000_000 + b'"}'
        response = client.post("/api/search", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 413 and "request body is larger" in response.json()["error"]
        chunks = iter([b'{"image": "'] + [b"A" * (1 << 20)] * 4 + [b'"}'])  # no Content-Length: counted as read
        response = client.post("/api/search", content=chunks, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert client.get("/healthz").status_code == 200


def test_public_bind_without_token_is_refused(main):
    result = torchclip("serve", str(main.store), "--host", "0.0.0.0", "--port", "1", check=2, timeout=60)
    assert "refusing to listen on 0.0.0.0 without --token" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------- a live collection


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the service did not pick up the store's new generation"
        time.sleep(0.2)


def test_live_update_while_serving():
    live = shared_server("live")
    with live.client() as client:
        before = client.get("/api/stats").json()
        gone = next(r for r in search(client, text="a yellow square", k=5)["results"] if "yellow" in r["key"])
        Path(gone["key"]).unlink()
        assert client.get(gone["image"]).status_code == 410  # vanished since it was embedded
        assert client.get(gone["thumbnail"]).status_code == 410
        blue = next(r for r in search(client, text="a blue square", k=5)["results"] if "blue" in r["key"])
        Path(blue["key"]).write_bytes(photo_bytes(live, "red_circle_0.jpg"))
        assert client.get(blue["image"]).status_code == 410  # changed since it was embedded
        synthetic_photos(live.photos / "new", ["red circle"], per_class=2)
        torchclip("embed", str(live.photos), "--out", str(live.store), "--workers", "0", "--quiet")
        wait_for(lambda: client.get("/api/stats").json()["generation"] != before["generation"])
        after = client.get("/api/stats").json()
        assert after["rows"] == before["rows"] + 1  # 2 new, the deleted one out, the changed one re-embedded
        answer = search(client, text="a red circle", k=20)
        keys = [r["key"] for r in answer["results"]]
        assert answer["generation"] == after["generation"]
        assert {str(live.photos / "new" / "red_circle_0.jpg"), str(live.photos / "new" / "red_circle_1.jpg")} <= set(
            keys
        )
        assert gone["key"] not in keys and gone["id"] not in [r["id"] for r in answer["results"]]
        assert client.get(gone["image"]).status_code in (404, 410)
        new_row = next(r for r in answer["results"] if r["key"] == blue["key"])
        assert new_row["id"] != blue["id"] and client.get(new_row["image"]).status_code == 200


# ---------------------------------------------------------------------- load


def timed_search(client: httpx.Client, text: str) -> tuple[int, float]:
    start = time.perf_counter()
    response = client.post("/api/search", json={"text": text, "k": 10})
    return response.status_code, time.perf_counter() - start


def test_load_16_clients_50_queries_each_without_error(main, capsys):
    texts = [
        f"a {colour} {shape} number {n}"
        for colour in ("red", "blue")
        for shape in ("circle", "square")
        for n in range(50)
    ]

    def client_run(offset: int) -> list[tuple[int, float]]:
        with main.client() as client:
            return [timed_search(client, texts[(offset + n) % len(texts)]) for n in range(50)]

    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        results = [row for rows in pool.map(client_run, range(0, 16 * 7, 7)) for row in rows]
    elapsed = time.perf_counter() - start
    statuses = [status for status, _ in results]
    assert len(results) == 800 and statuses.count(200) == 800, {s: statuses.count(s) for s in set(statuses)}
    latencies = sorted(seconds for _, seconds in results)
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * len(latencies)) - 1]
    with capsys.disabled():
        print(
            f"\n  serve load: 16 clients x 50 text queries: {800 / elapsed:.0f} QPS, "
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, 0 errors"
        )
    with main.client() as client:
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
    counts = {}
    for line in metrics.splitlines():
        for kind in ("text", "search"):
            for part in ("sum", "count"):
                if line.startswith(f'torchclip_batch_size_{part}{{kind="{kind}"}}'):
                    counts[kind, part] = float(line.split()[-1])
    for kind in ("text", "search"):  # concurrent queries shared forward passes and searches
        assert counts[kind, "sum"] / counts[kind, "count"] > 1.5, counts


def test_burst_beyond_the_queue_gets_503s_not_a_crash():
    live = shared_server("live")  # a queue of 4 and batches of 2
    memory_before = live.rss_mb()

    def one(n: int) -> int:
        with live.client() as client:
            return client.post("/api/search", json={"text": f"a red circle number {n}"}).status_code

    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(one, range(64)))
    assert set(statuses) <= {200, 503} and statuses.count(503) > 0 and statuses.count(200) > 0, statuses
    with live.client() as client:
        assert client.get("/healthz").status_code == 200
        assert client.post("/api/search", json={"text": "a red circle"}).status_code == 200
        assert "torchclip_queue_rejections_total" in client.get("/metrics").text
    assert live.rss_mb() < memory_before + 300
