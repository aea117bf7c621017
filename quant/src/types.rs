//! The one table that describes every tensor type passuntil understands.
//!
//! Each ggml type is described exactly once, in [`TYPES`]: its GGUF id, its name, how many
//! weights one block holds, how many bytes a block takes and which 8-bit activation format a
//! dot product pairs it with. Everything else (row sizes, bits per weight, parsing names and
//! ids) is derived from that table, so adding a format is one row here plus its module in
//! [`crate::formats`].

use std::fmt;

/// Weights per super-block of the K-quants (`QK_K` in ggml).
pub const QK_K: usize = 256;

/// A tensor element type supported by passuntil, with ggml's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE half float.
    F16,
    /// 4-bit, blocks of 32, one f16 scale (`x = d * (q - 8)`).
    Q4_0,
    /// 4-bit, blocks of 32, f16 scale and minimum (`x = d * q + m`).
    Q4_1,
    /// 5-bit, blocks of 32, one f16 scale.
    Q5_0,
    /// 5-bit, blocks of 32, f16 scale and minimum.
    Q5_1,
    /// 8-bit, blocks of 32, one f16 scale.
    Q8_0,
    /// 8-bit, blocks of 32, f16 scale and f16 `d * sum(q)` (activation partner of Q4_1/Q5_1).
    Q8_1,
    /// 2-bit K-quant, super-blocks of 256 (2.625 bits per weight).
    Q2K,
    /// 3-bit K-quant, super-blocks of 256 (3.4375 bits per weight).
    Q3K,
    /// 4-bit K-quant, super-blocks of 256 (4.5 bits per weight).
    Q4K,
    /// 5-bit K-quant, super-blocks of 256 (5.5 bits per weight).
    Q5K,
    /// 6-bit K-quant, super-blocks of 256 (6.5625 bits per weight).
    Q6K,
    /// 8-bit K-quant with f32 scale and group sums (activation partner of the K-quants).
    Q8K,
    /// bfloat16.
    BF16,
}

/// Facts about one [`GgmlType`]; see [`TYPES`].
#[derive(Clone, Copy, Debug)]
pub struct TypeInfo {
    /// The type described.
    pub ty: GgmlType,
    /// Its id in GGUF files (`enum ggml_type`).
    pub id: u32,
    /// Its name as ggml prints it (`q4_K`, `bf16`, ...).
    pub name: &'static str,
    /// Number of weights per block.
    pub block_size: usize,
    /// Number of bytes per block.
    pub type_size: usize,
    /// The activation format its dot product pairs it with (ggml's `vec_dot_type`).
    pub vec_dot_type: GgmlType,
}

const fn row(
    ty: GgmlType,
    id: u32,
    name: &'static str,
    block_size: usize,
    type_size: usize,
    vec_dot_type: GgmlType,
) -> TypeInfo {
    TypeInfo {
        ty,
        id,
        name,
        block_size,
        type_size,
        vec_dot_type,
    }
}

/// Every supported type, in [`GgmlType`] declaration order.
pub const TYPES: [TypeInfo; 15] = {
    use GgmlType::*;
    [
        row(F32, 0, "f32", 1, 4, F32),
        row(F16, 1, "f16", 1, 2, F32),
        row(Q4_0, 2, "q4_0", 32, 18, Q8_0),
        row(Q4_1, 3, "q4_1", 32, 20, Q8_1),
        row(Q5_0, 6, "q5_0", 32, 22, Q8_0),
        row(Q5_1, 7, "q5_1", 32, 24, Q8_1),
        row(Q8_0, 8, "q8_0", 32, 34, Q8_0),
        row(Q8_1, 9, "q8_1", 32, 36, Q8_1),
        row(Q2K, 10, "q2_K", QK_K, 84, Q8K),
        row(Q3K, 11, "q3_K", QK_K, 110, Q8K),
        row(Q4K, 12, "q4_K", QK_K, 144, Q8K),
        row(Q5K, 13, "q5_K", QK_K, 176, Q8K),
        row(Q6K, 14, "q6_K", QK_K, 210, Q8K),
        row(Q8K, 15, "q8_K", QK_K, 292, Q8K),
        row(BF16, 30, "bf16", 1, 2, F32),
    ]
};

/// ggml type ids that exist but passuntil does not support (yet), with ggml's names, so that
/// errors can say what a file holds.
const UNSUPPORTED_NAMES: [(u32, &str); 17] = [
    (16, "iq2_xxs"),
    (17, "iq2_xs"),
    (18, "iq3_xxs"),
    (19, "iq1_s"),
    (20, "iq4_nl"),
    (21, "iq3_s"),
    (22, "iq2_s"),
    (23, "iq4_xs"),
    (24, "i8"),
    (25, "i16"),
    (26, "i32"),
    (27, "i64"),
    (28, "f64"),
    (29, "iq1_m"),
    (34, "tq1_0"),
    (35, "tq2_0"),
    (39, "mxfp4"),
];

/// A type id that is not (or not yet) supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_unsupported(*.id))]
pub struct UnsupportedType {
    /// The raw id found.
    pub id: u32,
}

impl UnsupportedType {
    /// ggml's name for the id, when ggml has one.
    pub fn ggml_name(&self) -> Option<&'static str> {
        UNSUPPORTED_NAMES
            .iter()
            .find(|(id, _)| *id == self.id)
            .map(|(_, n)| *n)
    }
}

fn describe_unsupported(id: u32) -> String {
    match (UnsupportedType { id }).ggml_name() {
        Some(name) => format!("tensor type {name} (id {id}) is not supported by passuntil"),
        None => format!("unknown tensor type id {id}"),
    }
}

impl GgmlType {
    /// Every supported type.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TYPES.iter().map(|t| t.ty)
    }

    /// This type's row of [`TYPES`].
    pub fn info(self) -> &'static TypeInfo {
        // The table is in declaration order; `table_is_in_declaration_order` checks it.
        &TYPES[self as usize]
    }

    /// Looks up a GGUF type id.
    pub fn from_id(id: u32) -> Result<Self, UnsupportedType> {
        TYPES
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.ty)
            .ok_or(UnsupportedType { id })
    }

    /// Parses a type name, case-insensitively (`q4_k`, `Q4_K`, `bf16`).
    pub fn from_name(name: &str) -> Option<Self> {
        TYPES
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .map(|t| t.ty)
    }

    /// GGUF id.
    pub fn id(self) -> u32 {
        self.info().id
    }

    /// ggml's name.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Weights per block.
    pub fn block_size(self) -> usize {
        self.info().block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.info().type_size
    }

    /// Storage cost in bits per weight.
    pub fn bits_per_weight(self) -> f64 {
        let i = self.info();
        (i.type_size * 8) as f64 / i.block_size as f64
    }

    /// The activation format the dot product of this type pairs it with.
    pub fn vec_dot_type(self) -> GgmlType {
        self.info().vec_dot_type
    }

    /// Whether this is a block-quantized type (as opposed to a plain float type).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `n` weights, or `None` if `n` is not a whole number of blocks or the
    /// size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let i = self.info();
        let bs = i.block_size as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(i.type_size as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_declaration_order() {
        for (i, t) in TYPES.iter().enumerate() {
            assert_eq!(t.ty as usize, i, "{}", t.name);
            assert_eq!(GgmlType::from_id(t.id), Ok(t.ty));
            assert_eq!(GgmlType::from_name(t.name), Some(t.ty));
        }
    }

    #[test]
    fn bits_per_weight_match_ggml() {
        let expect = [
            (GgmlType::Q4_0, 4.5),
            (GgmlType::Q4_1, 5.0),
            (GgmlType::Q8_0, 8.5),
            (GgmlType::Q2K, 2.625),
            (GgmlType::Q3K, 3.4375),
            (GgmlType::Q4K, 4.5),
            (GgmlType::Q5K, 5.5),
            (GgmlType::Q6K, 6.5625),
            (GgmlType::F16, 16.0),
        ];
        for (t, bpw) in expect {
            assert_eq!(t.bits_per_weight(), bpw, "{t}");
        }
    }

    #[test]
    fn unsupported_ids_are_named() {
        let e = GgmlType::from_id(23).unwrap_err();
        assert_eq!(e.ggml_name(), Some("iq4_xs"));
        assert!(e.to_string().contains("iq4_xs"));
        assert!(GgmlType::from_id(4)
            .unwrap_err()
            .to_string()
            .contains("unknown"));
        assert!(GgmlType::from_id(u32::MAX).is_err());
    }

    #[test]
    fn row_bytes_checks_blocks() {
        assert_eq!(GgmlType::Q4_1.row_bytes(576), Some(18 * 20));
        assert_eq!(GgmlType::Q4_1.row_bytes(577), None);
        assert_eq!(GgmlType::Q4K.row_bytes(256), Some(144));
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None);
    }
}
