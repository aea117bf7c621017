//! `pass-until inspect`: a readable account of a GGUF file.
//!
//! [`inspect`] opens and validates a file and builds an [`InspectReport`]: file facts, a model
//! summary from the standard metadata keys, every metadata pair (arrays longer than
//! [`ARRAY_PREVIEW`] elements are summarised by type, length and first elements), the tensor
//! table and totals by type. The report prints as aligned text ([`InspectReport::render`]) or
//! serialises to JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use quant::gguf::{GgufError, GgufFile, Metadata, Value};
use serde::Serialize;

/// Array elements shown before a long array is summarised.
pub const ARRAY_PREVIEW: usize = 8;

/// Everything `inspect` reports.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    /// The file.
    pub path: String,
    /// Its size in bytes.
    pub file_size: u64,
    /// GGUF version.
    pub version: u32,
    /// Data alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// The model, from standard metadata keys.
    pub summary: ModelSummary,
    /// Every metadata pair in file order.
    pub metadata: Vec<MetadataRow>,
    /// Every tensor in file order.
    pub tensors: Vec<TensorRow>,
    /// Counts and sizes by tensor type, largest first.
    pub totals: Vec<TypeTotal>,
}

/// The model's shape, from `general.*` and `<arch>.*` keys. Missing keys are `None`.
#[derive(Debug, Default, Serialize)]
pub struct ModelSummary {
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`.
    pub name: Option<String>,
    /// `<arch>.block_count`.
    pub block_count: Option<u64>,
    /// `<arch>.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `<arch>.feed_forward_length`.
    pub feed_forward_length: Option<u64>,
    /// `<arch>.attention.head_count`.
    pub head_count: Option<u64>,
    /// `<arch>.attention.head_count_kv`.
    pub head_count_kv: Option<u64>,
    /// `<arch>.context_length`.
    pub context_length: Option<u64>,
    /// `<arch>.vocab_size`, else the length of `tokenizer.ggml.tokens`.
    pub vocab_size: Option<u64>,
    /// `tokenizer.ggml.model`.
    pub tokenizer: Option<String>,
    /// Total number of weights.
    pub parameters: u64,
}

/// One metadata pair.
#[derive(Debug, Serialize)]
pub struct MetadataRow {
    /// The key.
    pub key: String,
    /// Its type (`array[string]` for arrays).
    #[serde(rename = "type")]
    pub ty: String,
    /// The value; long arrays as `{len, head}`.
    pub value: serde_json::Value,
}

/// One tensor.
#[derive(Debug, Serialize)]
pub struct TensorRow {
    /// Name.
    pub name: String,
    /// Type name.
    #[serde(rename = "type")]
    pub ty: String,
    /// Dimensions, innermost first.
    pub shape: Vec<u64>,
    /// Number of elements.
    pub elements: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Offset in the data section.
    pub offset: u64,
}

/// Totals for one tensor type.
#[derive(Debug, Serialize)]
pub struct TypeTotal {
    /// Type name.
    #[serde(rename = "type")]
    pub ty: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Number of elements.
    pub elements: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Opens, validates and describes a GGUF file.
pub fn inspect(path: &Path) -> Result<InspectReport, GgufError> {
    let file = GgufFile::open(path)?;
    let md = file.metadata();
    let tensors: Vec<TensorRow> = file
        .tensor_infos()
        .iter()
        .map(|t| TensorRow {
            name: t.name.clone(),
            ty: t.ty.name().to_owned(),
            shape: t.shape.clone(),
            elements: t.n_elements(),
            bytes: t.size,
            offset: t.offset,
        })
        .collect();
    let mut by_type: BTreeMap<&str, TypeTotal> = BTreeMap::new();
    for t in &tensors {
        let e = by_type.entry(&t.ty).or_insert_with(|| TypeTotal {
            ty: t.ty.clone(),
            tensors: 0,
            elements: 0,
            bytes: 0,
        });
        e.tensors += 1;
        e.elements += t.elements;
        e.bytes += t.bytes;
    }
    let mut totals: Vec<TypeTotal> = by_type.into_values().collect();
    totals.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.ty.cmp(&b.ty)));
    let mut summary = summarize(md);
    summary.parameters = tensors.iter().map(|t| t.elements).sum();
    Ok(InspectReport {
        path: path.display().to_string(),
        file_size: file.file_len(),
        version: file.version(),
        alignment: file.alignment(),
        data_offset: file.data_offset(),
        summary,
        metadata: md
            .iter()
            .map(|(k, v)| MetadataRow {
                key: k.to_owned(),
                ty: type_label(v),
                value: to_json(v, Some(ARRAY_PREVIEW)),
            })
            .collect(),
        tensors,
        totals,
    })
}

fn summarize(md: &Metadata) -> ModelSummary {
    let arch = md.architecture().unwrap_or("unknown").to_owned();
    let num = |suffix: &str| md.get_u64(&format!("{arch}.{suffix}")).ok();
    ModelSummary {
        name: md.get_str("general.name").ok().map(str::to_owned),
        block_count: num("block_count"),
        embedding_length: num("embedding_length"),
        feed_forward_length: num("feed_forward_length"),
        head_count: num("attention.head_count"),
        head_count_kv: num("attention.head_count_kv"),
        context_length: num("context_length"),
        vocab_size: num("vocab_size").or_else(|| {
            md.get_array("tokenizer.ggml.tokens")
                .ok()
                .map(|(_, v)| v.len() as u64)
        }),
        tokenizer: md.get_str("tokenizer.ggml.model").ok().map(str::to_owned),
        architecture: arch,
        parameters: 0,
    }
}

fn type_label(v: &Value) -> String {
    match v {
        Value::Array(t, _) => format!("array[{t}]"),
        other => other.value_type().to_string(),
    }
}

/// A metadata value as JSON; arrays longer than `limit` become `{"len": n, "head": [...]}`.
pub fn to_json(v: &Value, limit: Option<usize>) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        // Through its shortest decimal form, so 1e-5f32 shows as 1e-5, not 9.99999974e-6.
        Value::F32(x) => json!(x.to_string().parse::<f64>().unwrap_or(f64::NAN)),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(_, items) => match limit {
            Some(n) if items.len() > n => json!({
                "len": items.len(),
                "head": items[..n].iter().map(|i| to_json(i, limit)).collect::<Vec<_>>(),
            }),
            _ => serde_json::Value::Array(items.iter().map(|i| to_json(i, limit)).collect()),
        },
    }
}

/// `576 × 49152`
fn shape_str(shape: &[u64]) -> String {
    shape
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" × ")
}

/// Bytes in binary units: `98.36 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(o) if o.contains_key("len") => {
            let head = o["head"]
                .as_array()
                .map(|h| h.iter().map(value_text).collect::<Vec<_>>().join(", "));
            format!("[{}, … ({} items)]", head.unwrap_or_default(), o["len"])
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(value_text).collect::<Vec<_>>().join(", ")
            )
        }
        serde_json::Value::String(s) => {
            let one_line: String = s.chars().take(120).collect();
            let cut = if s.chars().count() > 120 { "…" } else { "" };
            format!("{:?}{cut}", one_line)
        }
        other => other.to_string(),
    }
}

impl InspectReport {
    /// The report as aligned, human-readable text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
        let m = &self.summary;
        let _ = writeln!(
            s,
            "{}: {} ({} bytes), GGUF v{}, alignment {}, data at offset {}",
            self.path,
            human_bytes(self.file_size),
            self.file_size,
            self.version,
            self.alignment,
            self.data_offset
        );
        let _ = writeln!(
            s,
            "model: {}{}, {} blocks, embedding {}, feed-forward {}, {} heads, {} KV heads, context {}, vocab {} ({} tokenizer), {} parameters",
            m.architecture,
            m.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
            opt(m.block_count),
            opt(m.embedding_length),
            opt(m.feed_forward_length),
            opt(m.head_count),
            opt(m.head_count_kv),
            opt(m.context_length),
            opt(m.vocab_size),
            m.tokenizer.as_deref().unwrap_or("?"),
            m.parameters,
        );
        let _ = writeln!(s, "\nmetadata ({} keys):", self.metadata.len());
        let kw = self.metadata.iter().map(|r| r.key.len()).max().unwrap_or(0);
        let tw = self.metadata.iter().map(|r| r.ty.len()).max().unwrap_or(0);
        for r in &self.metadata {
            let _ = writeln!(s, "  {:kw$}  {:tw$}  {}", r.key, r.ty, value_text(&r.value));
        }
        let _ = writeln!(s, "\ntensors ({}):", self.tensors.len());
        let nw = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let shapes: Vec<String> = self.tensors.iter().map(|t| shape_str(&t.shape)).collect();
        let sw = shapes
            .iter()
            .map(|x| x.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            s,
            "  {:nw$}  {:5}  {:sw$}  {:>12}",
            "name", "type", "shape", "bytes"
        );
        for (t, shape) in self.tensors.iter().zip(&shapes) {
            let pad = sw - shape.chars().count() + shape.len();
            let _ = writeln!(
                s,
                "  {:nw$}  {:5}  {:pad$}  {:>12}",
                t.name, t.ty, shape, t.bytes
            );
        }
        let _ = writeln!(s, "\ntotals by type:");
        let _ = writeln!(
            s,
            "  {:5}  {:>7}  {:>12}  {:>12}  {:>10}",
            "type", "tensors", "elements", "bytes", "size"
        );
        for t in &self.totals {
            let _ = writeln!(
                s,
                "  {:5}  {:>7}  {:>12}  {:>12}  {:>10}",
                t.ty,
                t.tensors,
                t.elements,
                t.bytes,
                human_bytes(t.bytes)
            );
        }
        let (n, e, b) = self.totals.iter().fold((0, 0, 0), |(n, e, b), t| {
            (n + t.tensors, e + t.elements, b + t.bytes)
        });
        let _ = writeln!(
            s,
            "  {:5}  {:>7}  {:>12}  {:>12}  {:>10}",
            "all",
            n,
            e,
            b,
            human_bytes(b)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant::gguf::GgufWriter;
    use quant::GgmlType;

    #[test]
    fn reports_a_small_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String("llama".into()));
        w.set("llama.block_count", Value::U32(2));
        let tokens: Vec<Value> = (0..20).map(|i| Value::String(format!("t{i}"))).collect();
        w.set(
            "tokenizer.ggml.tokens",
            Value::Array(quant::gguf::ValueType::String, tokens),
        );
        let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let q = quant::formats::quantize_to_vec(GgmlType::Q8_0, &x).unwrap();
        w.add_tensor("a", &[32, 2], GgmlType::Q8_0, q).unwrap();
        w.add_tensor("b", &[4], GgmlType::F32, vec![0u8; 16])
            .unwrap();
        w.write_to_path(&path).unwrap();

        let r = inspect(&path).unwrap();
        assert_eq!(r.summary.architecture, "llama");
        assert_eq!(r.summary.block_count, Some(2));
        assert_eq!(r.summary.vocab_size, Some(20));
        assert_eq!(r.summary.parameters, 68);
        assert_eq!(r.tensors.len(), 2);
        assert_eq!(r.totals[0].ty, "q8_0");
        assert_eq!(r.totals[0].bytes, 68);
        let tok = r
            .metadata
            .iter()
            .find(|m| m.key == "tokenizer.ggml.tokens")
            .unwrap();
        assert_eq!(tok.value["len"], 20);
        assert_eq!(tok.value["head"].as_array().unwrap().len(), ARRAY_PREVIEW);
        let text = r.render();
        assert!(text.contains("32 × 2"), "{text}");
        assert!(text.contains("(20 items)"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["tensors"][0]["type"], "q8_0");
    }
}
