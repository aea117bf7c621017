//! GGUF: write → read is bit-exact, and a corpus of hand-made hostile files each gives the
//! expected error (never a panic, never an allocation driven by a bogus count).

use quant::formats::quantize_to_vec;
use quant::gguf::{Gguf, GgufError, GgufWriter, Value, ValueType};
use quant::GgmlType;
use rand::{Rng, SeedableRng};

fn sample_metadata() -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(65535)),
        ("t.i16", Value::I16(-32768)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::String("héllo ✓ 😀".into())),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.empty", Value::Array(ValueType::U32, vec![])),
        (
            "t.nested",
            Value::Array(
                ValueType::Array,
                vec![
                    Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(-2)]),
                    Value::Array(ValueType::String, vec![Value::String("a".into())]),
                ],
            ),
        ),
        (
            "t.floats",
            Value::Array(ValueType::F32, vec![Value::F32(f32::NAN), Value::F32(-0.0)]),
        ),
    ]
}

/// A file with every metadata type and one tensor of every supported type.
/// A tensor written to a sample file: name, type and bytes.
type SampleTensor = (String, GgmlType, Vec<u8>);

fn sample_file(alignment: Option<u32>) -> (Vec<u8>, Vec<SampleTensor>) {
    let mut w = GgufWriter::new();
    for (k, v) in sample_metadata() {
        w.set(k, v);
    }
    if let Some(a) = alignment {
        w.set("general.alignment", Value::U32(a));
    }
    let mut tensors = Vec::new();
    for (i, ty) in GgmlType::all().enumerate() {
        let n = ty.block_size() * (i + 1);
        let x: Vec<f32> = (0..2 * n)
            .map(|j| ((i * 31 + j) as f32 * 0.37).sin())
            .collect();
        let bytes = quantize_to_vec(ty, &x).unwrap();
        tensors.push((format!("tensor.{}", ty.name()), ty, bytes));
    }
    for (name, ty, bytes) in &tensors {
        let n = bytes.len() / ty.type_size() * ty.block_size();
        w.add_tensor(name.clone(), &[n as u64 / 2, 2], *ty, bytes.as_slice())
            .unwrap();
    }
    let mut out = Vec::new();
    w.write(&mut out).unwrap();
    (out, tensors)
}

#[test]
fn write_then_read_is_bit_exact() {
    for alignment in [None, Some(64), Some(1)] {
        let (bytes, tensors) = sample_file(alignment);
        let file = Gguf::from_bytes(bytes.clone()).unwrap();
        assert_eq!(file.version(), 3);
        assert_eq!(file.alignment(), alignment.map_or(32, u64::from));
        let md = file.metadata();
        for (k, v) in sample_metadata() {
            let got = md.get(k).unwrap();
            // NaN != NaN: compare through the debug form, which is exact for floats.
            assert_eq!(format!("{got:?}"), format!("{v:?}"), "{k}");
        }
        assert_eq!(file.tensor_infos().len(), tensors.len());
        for (name, ty, data) in &tensors {
            let t = file.tensor(name).unwrap();
            assert_eq!(t.ty(), *ty);
            assert_eq!(t.data, &data[..], "{name}");
            assert_eq!(t.info.offset % file.alignment(), 0);
            assert_eq!((file.data_offset() + t.info.offset) % file.alignment(), 0);
        }
        // Writing what was read gives the same bytes again.
        let mut w = GgufWriter::with_metadata(md.clone());
        for t in file.tensors() {
            w.add_tensor(t.name(), &t.info.shape, t.ty(), t.data)
                .unwrap();
        }
        let mut again = Vec::new();
        w.write(&mut again).unwrap();
        assert_eq!(again, bytes);
    }
}

#[test]
fn typed_views_are_zero_copy_and_checked() {
    let (bytes, _) = sample_file(None);
    let file = Gguf::from_bytes(bytes).unwrap();
    let t = file.tensor("tensor.q4_K").unwrap();
    let blocks = t.blocks::<quant::formats::BlockQ4K>().unwrap();
    assert_eq!(blocks.len() * 144, t.data.len());
    assert_eq!(blocks.as_ptr() as *const u8, t.data.as_ptr());
    assert!(matches!(
        t.blocks::<quant::formats::BlockQ4_0>(),
        Err(GgufError::WrongTensorType { .. })
    ));
    assert!(matches!(
        file.tensor("nope"),
        Err(GgufError::TensorNotFound { .. })
    ));
    let x = t.to_f32().unwrap();
    assert_eq!(x.len() as u64, t.info.n_elements());
}

#[test]
fn file_on_disk_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.add_tensor("w", &[32], GgmlType::Q8_0, vec![7u8; 34])
        .unwrap();
    w.write_to_path(&path).unwrap();
    assert!(!dir.path().join("m.gguf.partial").exists());
    let f = quant::gguf::GgufFile::open(&path).unwrap();
    assert_eq!(f.tensor("w").unwrap().data, &[7u8; 34][..]);
    // Released pages read the same again; a slice from elsewhere is ignored.
    f.release(f.tensor("w").unwrap().data);
    f.release(&[1u8, 2, 3]);
    assert_eq!(f.tensor("w").unwrap().data, &[7u8; 34][..]);
    let err = quant::gguf::GgufFile::open(dir.path().join("missing.gguf")).unwrap_err();
    assert!(err.to_string().contains("missing.gguf"), "{err}");
}

#[test]
fn writer_rejects_bad_tensors() {
    let mut w = GgufWriter::new();
    let e = w
        .add_tensor("w", &[32], GgmlType::Q4_0, vec![0u8; 17])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::TensorSizeMismatch { .. }), "{e}");
    let e = w
        .add_tensor("w", &[33], GgmlType::Q4_0, vec![0u8; 18])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::RowNotWholeBlocks { .. }), "{e}");
    let e = w
        .add_tensor("x".repeat(64), &[1], GgmlType::F32, vec![0u8; 4])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::TensorNameTooLong { .. }), "{e}");
    let e = w
        .add_tensor("w", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0u8; 4])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::TooManyDims { .. }), "{e}");
    w.add_tensor("w", &[1], GgmlType::F32, vec![0u8; 4])
        .unwrap();
    let e = w
        .add_tensor("w", &[1], GgmlType::F32, vec![0u8; 4])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::DuplicateTensor { .. }), "{e}");
}

/// Builds raw GGUF bytes piece by piece, for files the writer would refuse to make.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k).u32(ValueType::U32 as u32).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(&mut self, n: usize) -> Vec<u8> {
        let mut v = self.0.clone();
        v.resize(v.len().next_multiple_of(32) + n, 0xAB);
        v
    }
}

fn err_of(bytes: Vec<u8>) -> GgufError {
    match Gguf::from_bytes(bytes) {
        Ok(_) => panic!("hostile file was accepted"),
        Err(e) => e,
    }
}

#[test]
fn hostile_headers_give_the_expected_errors() {
    use GgufError as E;
    /// Name, file, expected variant, text the message must contain.
    type Case = (&'static str, Vec<u8>, fn(&E) -> bool, &'static str);
    let cases: Vec<Case> = vec![
        (
            "empty",
            vec![],
            |e| matches!(e, E::Truncated { .. }),
            "magic",
        ),
        (
            "bad magic",
            b"GGML\x03\0\0\0".to_vec(),
            |e| matches!(e, E::BadMagic { .. }),
            "GGML",
        ),
        (
            "v1",
            Raw::header(1, 0, 0).0,
            |e| matches!(e, E::UnsupportedVersion { version: 1, .. }),
            "obsolete",
        ),
        (
            "big endian",
            Raw::header(0x0300_0000, 0, 0).0,
            |e| matches!(e, E::UnsupportedVersion { .. }),
            "byte-swapped",
        ),
        (
            "huge tensor count",
            Raw::header(3, u64::MAX, 0).0,
            |e| matches!(e, E::CountTooLarge { .. }),
            "tensor count",
        ),
        (
            "huge kv count",
            Raw::header(3, 0, 1 << 60).0,
            |e| matches!(e, E::CountTooLarge { .. }),
            "metadata pair count",
        ),
        (
            "key past end",
            {
                let mut r = Raw::header(3, 0, 1);
                r.u64(1 << 40).u64(0).u64(0);
                r.0
            },
            |e| matches!(e, E::Truncated { .. }),
            "key of metadata pair 0",
        ),
        (
            "string value past end",
            {
                let mut r = Raw::header(3, 0, 1);
                r.str("general.name")
                    .u32(ValueType::String as u32)
                    .u64(1000);
                r.0
            },
            |e| matches!(e, E::Truncated { .. }),
            "general.name",
        ),
        (
            "huge array",
            {
                let mut r = Raw::header(3, 0, 1);
                r.str("tokenizer.ggml.tokens")
                    .u32(ValueType::Array as u32)
                    .u32(ValueType::String as u32)
                    .u64(u64::MAX / 2);
                r.0
            },
            |e| matches!(e, E::CountTooLarge { .. }),
            "tokenizer.ggml.tokens",
        ),
        (
            "invalid value type",
            {
                let mut r = Raw::header(3, 0, 1);
                r.str("k").u32(13).u32(0);
                r.0
            },
            |e| matches!(e, E::InvalidValueType { id: 13, .. }),
            "'k'",
        ),
        (
            "deep nesting",
            {
                let mut r = Raw::header(3, 0, 1);
                r.str("deep").u32(ValueType::Array as u32);
                for _ in 0..20 {
                    r.u32(ValueType::Array as u32).u64(1);
                }
                r.0
            },
            |e| matches!(e, E::NestingTooDeep { .. }),
            "deep",
        ),
        (
            "duplicate key",
            {
                let mut r = Raw::header(3, 0, 2);
                r.kv_u32("a.b", 1).kv_u32("a.b", 2);
                r.0
            },
            |e| matches!(e, E::DuplicateKey { .. }),
            "a.b",
        ),
        (
            "empty key",
            {
                let mut r = Raw::header(3, 0, 1);
                r.kv_u32("", 1);
                r.0
            },
            |e| matches!(e, E::EmptyKey { .. }),
            "empty key",
        ),
        (
            "invalid utf-8 key",
            {
                let mut r = Raw::header(3, 0, 1);
                r.u64(2);
                r.0.extend_from_slice(&[0xff, 0xfe]);
                r.u32(ValueType::U8 as u32).0.push(1);
                r.0
            },
            |e| matches!(e, E::InvalidUtf8 { .. }),
            "UTF-8",
        ),
        (
            "zero alignment",
            {
                let mut r = Raw::header(3, 0, 1);
                r.kv_u32("general.alignment", 0);
                r.0
            },
            |e| matches!(e, E::BadAlignment { .. }),
            "power of two",
        ),
        (
            "odd alignment",
            {
                let mut r = Raw::header(3, 0, 1);
                r.kv_u32("general.alignment", 48);
                r.0
            },
            |e| matches!(e, E::BadAlignment { .. }),
            "48",
        ),
        (
            "too many dims",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("t", &[1, 1, 1, 1, 1], 0, 0);
                r.data(4)
            },
            |e| matches!(e, E::TooManyDims { .. }),
            "'t'",
        ),
        (
            "shape overflow",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("big", &[1 << 32, 1 << 32], 0, 0);
                r.data(4)
            },
            |e| matches!(e, E::ShapeOverflow { .. }),
            "'big'",
        ),
        (
            "unsupported type",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("blk.0.ffn_down.weight", &[256], 23, 0);
                r.data(256)
            },
            |e| matches!(e, E::UnsupportedTensorType { .. }),
            "iq4_xs (id 23)",
        ),
        (
            "unknown type",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("w", &[32], 99, 0);
                r.data(256)
            },
            |e| matches!(e, E::UnsupportedTensorType { .. }),
            "unknown tensor type id 99",
        ),
        (
            "row not whole blocks",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("w", &[33, 2], GgmlType::Q4_0.id(), 0);
                r.data(64)
            },
            |e| matches!(e, E::RowNotWholeBlocks { .. }),
            "'w'",
        ),
        (
            "misaligned offset",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("w", &[4], 0, 8);
                r.data(64)
            },
            |e| matches!(e, E::MisalignedTensor { offset: 8, .. }),
            "'w'",
        ),
        (
            "tensor past end",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("w", &[32], GgmlType::Q8_0.id(), 0);
                r.data(33)
            },
            |e| matches!(e, E::TensorOutOfBounds { .. }),
            "'w'",
        ),
        (
            "offset overflow",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("w", &[4], 0, u64::MAX - 31);
                r.data(16)
            },
            |e| matches!(e, E::TensorOutOfBounds { .. }),
            "'w'",
        ),
        (
            "overlapping tensors",
            {
                let mut r = Raw::header(3, 2, 0);
                r.tensor("a", &[16], 0, 0).tensor("b", &[16], 0, 32);
                r.data(128)
            },
            |e| matches!(e, E::TensorsOverlap { .. }),
            "'a' and 'b'",
        ),
        (
            "duplicate tensor",
            {
                let mut r = Raw::header(3, 2, 0);
                r.tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32);
                r.data(64)
            },
            |e| matches!(e, E::DuplicateTensor { .. }),
            "'a'",
        ),
    ];
    for (name, bytes, check, needle) in cases {
        let e = err_of(bytes);
        let msg = e.to_string();
        assert!(check(&e), "{name}: unexpected error {e:?}");
        assert!(
            msg.contains(needle),
            "{name}: message {msg:?} lacks {needle:?}"
        );
    }
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let (bytes, _) = sample_file(None);
    let file = Gguf::from_bytes(bytes.clone()).unwrap();
    // Cutting anywhere before the end of the last tensor must fail cleanly. (Past it only
    // the final padding is lost, which is harmless.)
    let last_end = file
        .tensor_infos()
        .iter()
        .map(|t| file.data_offset() + t.offset + t.size)
        .max()
        .unwrap();
    for len in 0..last_end as usize {
        assert!(
            Gguf::from_bytes(&bytes[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    let (bytes, _) = sample_file(None);
    let header_end = Gguf::from_bytes(bytes.clone()).unwrap().data_offset() as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..rng.random_range(1..8) {
            let i = rng.random_range(0..header_end);
            b[i] = rng.random();
        }
        if let Ok(f) = Gguf::from_bytes(b) {
            for t in f.tensors() {
                let _ = t.to_f32().unwrap();
            }
        }
    }
}

/// A mapped file truncated by someone else: reading its lost pages ends the process with a
/// message naming the file and status 74, not a bare SIGBUS. The test runs itself again as a
/// child that opens, truncates and reads (natively only: under qemu-user, as CI runs the
/// aarch64 build, a test binary cannot start itself again).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn a_file_truncated_while_mapped_is_named() {
    const CHILD: &str = "PASSUNTIL_SIGBUS_CHILD";
    if let Some(path) = std::env::var_os(CHILD) {
        let file = quant::gguf::GgufFile::open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let t = file.tensors().next().unwrap();
        let sum: u64 = t.data.iter().map(|&b| b as u64).sum();
        panic!("read {sum} past the end without a fault");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    let x: Vec<f32> = (0..1 << 18).map(|i| i as f32).collect();
    w.add_tensor("t", &[1 << 18], GgmlType::F32, bytemuck::cast_slice(&x))
        .unwrap();
    let mut bytes = Vec::new();
    w.write(&mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_file_truncated_while_mapped_is_named",
            "--nocapture",
        ])
        .env(CHILD, &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{stderr}");
    assert!(
        stderr.contains(&format!("the model file {} shrank", path.display())),
        "{stderr}"
    );
}
