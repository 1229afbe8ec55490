"""Values: ``Writer.send`` / ``Reader.recv`` in the envelope format (docs/FORMAT.md), Python to
Python and across languages (a Rust process at the other end), and hostile envelopes."""

import gc
import os
import pathlib
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shm_arena

REPO = pathlib.Path(__file__).resolve().parents[2]


def pair(capacity=1 << 20):
    region = shm_arena.Region(capacity)
    return region, region.writer(), region.reader()


def base_blob(array):
    """The object at the bottom of an array's chain of bases (for a view of shared memory: the
    package's Blob)."""
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def test_a_nested_dict_with_two_arrays_comes_back_as_views_of_shared_memory():
    region, writer, reader = pair()
    image = np.arange(64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)
    labels = np.arange(10_000, dtype=np.int64)
    writer.send({"meta": {"id": 7, "name": "cat"}, "x": image, "y": [labels, 3.5]})

    got = reader.recv(1.0)
    x, y = got["x"], got["y"][0]
    assert got["meta"] == {"id": 7, "name": "cat"} and got["y"][1] == 3.5
    for arr, want in ((x, image), (y, labels)):
        assert arr.dtype == want.dtype and arr.shape == want.shape
        assert np.array_equal(arr, want)
        assert not arr.flags.owndata, "a view, not a copy"
        assert not arr.flags.writeable, "shared memory is read-only for readers"
        assert isinstance(base_blob(arr), shm_arena.Blob), "the view is of shared memory"
    with pytest.raises(ValueError):
        x[0, 0, 0] = 1.0


def test_arrays_keep_their_unit_until_the_last_reference_goes():
    # Room for one 3 MiB value at a time: while its arrays live, the next cannot be written.
    region, writer, reader = pair(1 << 23)
    writer.timeout = 0.3
    first = np.full(2 << 20, 1, dtype=np.uint8)
    writer.send({"a": first, "b": first[: 1 << 20].view(np.float32)})  # 3 MiB
    got = reader.recv(1.0)
    a, b = got["a"], got["b"]
    del got
    writer.send({"a": np.full(3 << 20, 2, dtype=np.uint8)})  # fits beside the first
    with pytest.raises(TimeoutError):
        writer.send({"a": np.full(3 << 20, 3, dtype=np.uint8)})
    assert int(a[0]) == 1 and int(a[-1]) == 1, "still intact"
    del a
    gc.collect()
    with pytest.raises(TimeoutError):
        writer.send({"a": np.full(3 << 20, 3, dtype=np.uint8)})  # b still pins the unit
    assert b.view(np.uint8)[0] == 1
    del b
    gc.collect()
    assert int(reader.recv(1.0)["a"][0]) == 2
    writer.send({"a": np.full(3 << 20, 3, dtype=np.uint8)})
    assert int(reader.recv(1.0)["a"][-1]) == 3


def test_every_supported_type_round_trips():
    region, writer, reader = pair()
    value = {
        "none": None,
        "bools": [True, False],
        "ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1],
        "float": 1.25,
        "str": "grüße ✓",
        "bytes": b"\x00\x01small",
        "big_bytes": bytes(range(256)) * 40,
        "bytearray": bytearray(b"ba"),
        "memoryview": memoryview(b"mv"),
        "tuple": (1, "two", (3.0,)),
        "empty": [[], {}, b"", ""],
        7: "int keys",
        "numpy_scalars": [np.float32(0.5), np.int16(-3), np.uint64(2**64 - 1), np.bool_(True)],
        "arrays": [np.zeros((), dtype=np.float64), np.zeros((0, 3), dtype=np.int8)]
        + [np.arange(6, dtype=t).reshape(2, 3) for t in
           ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8")],
        "strided": np.arange(20, dtype=np.int32)[::2],
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
    }
    writer.send(value)
    got = reader.recv(1.0)
    assert got["none"] is None and got["bools"] == [True, False]
    assert got["ints"] == value["ints"] and got["float"] == 1.25 and got["str"] == value["str"]
    assert got["bytes"] == value["bytes"] and type(got["bytes"]) is bytes, "inline: a copy"
    assert isinstance(got["big_bytes"], memoryview) and got["big_bytes"].readonly
    assert bytes(got["big_bytes"]) == value["big_bytes"]
    assert got["bytearray"] == b"ba" and got["memoryview"] == b"mv"
    assert got["tuple"] == [1, "two", [3.0]], "sequences come back as lists"
    assert got["empty"] == [[], {}, b"", ""] and got[7] == "int keys"
    assert got["numpy_scalars"] == [0.5, -3, 2**64 - 1, True]
    for sent, back in zip(value["arrays"], got["arrays"]):
        assert back.dtype == sent.dtype and back.shape == sent.shape
        assert np.array_equal(back, sent)
    assert np.array_equal(got["strided"], value["strided"])
    assert np.array_equal(got["fortran"], value["fortran"])


def test_copy_true_returns_owned_values_and_ends_the_unit():
    region, writer, reader = pair(1 << 23)
    writer.timeout = 0.3
    writer.send({"a": np.ones(3 << 20, dtype=np.uint8), "b": b"x" * 10_000})
    got = reader.recv(1.0, copy=True)
    assert got["a"].flags.owndata and got["a"].flags.writeable
    assert type(got["b"]) is bytes
    got["a"][0] = 5
    # The unit ended with recv: two more values of the same size fit.
    writer.send({"a": np.ones(3 << 20, dtype=np.uint8)})
    writer.send({"a": np.ones(3 << 20, dtype=np.uint8)})


def test_unit_decode_and_the_offload_threshold():
    region, writer, reader = pair()
    writer.send({"b": b"y" * 100, "a": np.arange(30, dtype=np.float32)}, offload_threshold=64)
    unit = reader.next_unit(1.0)
    assert unit.blob_count == 3, "two leaves offloaded, then the envelope"
    got = unit.decode()
    unit.end_unit()
    assert isinstance(got["b"], memoryview) and bytes(got["b"]) == b"y" * 100
    assert not got["a"].flags.owndata and got["a"][29] == 29.0
    writer.send({"b": b"y" * 100})
    assert reader.next_unit(1.0).blob_count == 1, "below the default threshold: inline"


@pytest.mark.parametrize(
    "value, error, match",
    [
        ({"a": [1, {2, 3}]}, TypeError, r"type set \(at value\['a'\]\[1\]\)"),
        ({"a": object()}, TypeError, r"type object \(at value\['a'\]\)"),
        ({1.5: 2}, TypeError, "dict key of type float"),
        ({"n": 2**64}, OverflowError, r"int 18446744073709551616 \(at value\['n'\]\)"),
        ([-(2**63) - 1], OverflowError, "does not fit in 64 bits"),
        ({"m": np.zeros(3, dtype=bool)}, TypeError, "numpy array of dtype bool"),
        (np.zeros(3, dtype=">f4"), TypeError, "dtype >f4"),
        (np.zeros(3, dtype=np.complex64), TypeError, "dtype complex64"),
        (np.zeros(3, dtype=np.float16), TypeError, "dtype float16"),
        ([np.datetime64("2020-01-01")], TypeError, "datetime"),
    ],
)
def test_unsupported_values_raise_naming_the_type_and_place_and_send_nothing(value, error, match):
    region, writer, reader = pair()
    with pytest.raises(error, match=match):
        writer.send(value)
    assert reader.try_next_unit() is None
    writer.send("next")
    assert reader.recv(1.0) == "next"


def test_self_containing_and_too_deep_values_are_errors():
    region, writer, reader = pair()
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nests deeper than 128"):
        writer.send(loop)
    deep = 0
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ValueError, match="nests deeper"):
        writer.send(deep)
    ok = 0
    for _ in range(100):
        ok = [ok]
    writer.send(ok)
    got = reader.recv(1.0)
    for _ in range(100):
        got = got[0]
    assert got == 0


def test_a_value_larger_than_the_ring_is_an_error():
    region, writer, reader = pair(1 << 16)
    with pytest.raises(ValueError, match="larger|exceeds|too large|max"):
        writer.send(np.zeros(1 << 16, dtype=np.uint8))


# --- hostile envelopes --------------------------------------------------------------------------


def valid_envelope_and_leaves():
    """A real envelope with every kind of tag, and its leaves, as the writer stored them."""
    region, writer, reader = pair()
    writer.send(
        {
            "s": "x",
            "i": [-5, 2**64 - 1, 1.5, None, True],
            "b": b"abc",
            "a": np.arange(12, dtype=np.int16).reshape(3, 4),
            "big": np.arange(40, dtype=np.float64),
            "t": (b"z" * 70,),
        },
        offload_threshold=64,
    )
    unit = reader.next_unit(1.0)
    blobs = [bytes(unit.blob(i)) for i in range(unit.blob_count)]
    return blobs[-1], blobs[:-1]


ENVELOPE, LEAVES = valid_envelope_and_leaves()
HOSTILE = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def recv_hostile(blobs):
    """Writes `blobs` as a unit (last = envelope) and decodes it: a value or a ValueError, never
    anything else; the ring stays usable."""
    region, writer, reader = pair(1 << 16)
    writer.write_unit(blobs)
    try:
        value = reader.recv(1.0)
    except ValueError as e:
        assert "envelope" in str(e) or "blob" in str(e) or "unit" in str(e), e
        value = None
    writer.send("after")
    assert reader.recv(1.0) == "after"
    return value


@HOSTILE
@given(st.binary(max_size=300))
def test_random_envelopes_are_errors_or_values(envelope):
    recv_hostile([envelope])
    recv_hostile([b"\x01" + envelope])


@HOSTILE
@given(st.data())
def test_mutated_envelopes_are_errors_or_values(data):
    envelope = bytearray(ENVELOPE)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(envelope) - 1))
        envelope[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(envelope)))
    leaves = LEAVES[: data.draw(st.integers(0, len(LEAVES)))]
    recv_hostile(leaves + [bytes(envelope[:cut])])


def test_the_valid_envelope_decodes_and_hostile_basics_fail():
    assert recv_hostile(LEAVES + [ENVELOPE])["s"] == "x"
    for bad in [b"", b"\x02\x01", b"\x01\x40\xff\xff\xff\xff\x0f", b"\x01" + b"\x05" * 10_000,
                b"\x01\x32\x00\x10", b"\x01\x51\x66\x01\x04\x00\x10"]:
        assert recv_hostile([bad]) is None
    # A unit with no blobs is not a value.
    region, writer, reader = pair()
    writer.write_unit([])
    with pytest.raises(ValueError, match="no blobs"):
        reader.recv(1.0)


# --- across languages ---------------------------------------------------------------------------


def values_peer():
    """The Rust end (examples/values_peer.rs), built if needed."""
    exe = REPO / "target" / "debug" / "examples" / "values_peer"
    if not exe.exists():
        subprocess.run(
            ["cargo", "build", "--quiet", "--example", "values_peer"], cwd=REPO, check=True
        )
    return str(exe)


def test_rust_sends_structs_python_receives_dicts_with_array_views():
    region = shm_arena.Region(1 << 24, backing="named")
    reader = region.reader()
    count, size = 20, 100_000
    child = subprocess.Popen(
        [values_peer(), "send", "--name", region.name, "--count", str(count), "--size", str(size)]
    )
    try:
        for seq in range(count):
            frame = reader.recv(30.0)
            assert frame["seq"] == seq and frame["label"] == f"frame-{seq}"
            kind = [
                "Plain",
                {"Scaled": seq / 2},
                {"Window": {"start": seq, "len": 7}},
            ][seq % 3]
            assert frame["kind"] == kind
            assert frame["tags"] == ["rust", "f32"]
            assert frame["gain"] == (0.5 if seq % 2 == 0 else None)
            assert frame["pair"] == [-seq, 0.25]
            spectrum = frame["spectrum"]
            assert spectrum.dtype == np.float32 and spectrum.shape == (2, 64)
            assert np.array_equal(
                spectrum, (seq * 1000 + np.arange(128, dtype=np.float32)).reshape(2, 64)
            )
            data = frame["data"]
            assert data.dtype == np.uint8 and data.shape == (size,)
            assert not data.flags.owndata and not data.flags.writeable
            assert int(data[0]) == seq % 251 and int(data[-1]) == seq % 251
        assert child.wait(30) == 0
    finally:
        child.kill()
        child.wait()


def test_python_sends_dicts_rust_decodes_structs():
    region = shm_arena.Region(1 << 22, backing="named")
    writer = region.writer()
    count = 6
    child = subprocess.Popen(
        [values_peer(), "recv", "--name", region.name, "--count", str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        expected = []
        for seq in range(count):
            samples = np.arange(2 * 3000, dtype=np.float32).reshape(2, 3000) + seq
            kind = ["Plain", {"Scaled": 2.5}, {"Window": {"start": 1, "len": seq}}][seq % 3]
            writer.send(
                {
                    "seq": seq,
                    "name": f"item-{seq}",
                    "samples": samples,
                    "raw": bytes([seq]) * (5000 + seq),
                    "flags": [True, seq % 2 == 0],
                    "meta": {"a": -seq, "b": 2},
                    "missing": None,
                    "present": 5,
                    "kind": kind,
                    "pair": (-seq, 0.5),
                }
            )
            kind_debug = ["Plain", "Scaled(2.5)", f"Window {{ start: 1, len: {seq} }}"][seq % 3]
            expected.append(
                f"seq={seq} name=item-{seq} samples=[2, 3000] sum={samples.sum(dtype=np.float64):.1f} "
                f"borrowed=true raw={5000 + seq}x{seq} flags=[true, {str(seq % 2 == 0).lower()}] "
                f'meta={{"a": {-seq}, "b": 2}} missing=None present=Some(5) kind={kind_debug} '
                f"pair=({-seq}, 0.5)"
            )
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        assert out.splitlines() == expected
    finally:
        child.kill()
        child.wait()
