//! UTF-8 as llama.cpp reads and writes it: lead bytes with unchecked continuation counts,
//! overlong forms and surrogates included.

/// One character as llama.cpp's `unicode_cpt_from_utf8` reads it: a lead byte and the right
/// number of continuation bytes, without checking for overlong forms or surrogates. Returns
/// the character to match expressions against (U+FFFD for code points Rust cannot hold) and
/// the bytes used and the code point; `None` for a byte that starts no such sequence.
pub(super) fn utf8_char(b: &[u8]) -> Option<(char, usize, u32)> {
    let lead = b[0];
    let (len, init) = match lead {
        0x00..=0x7F => return Some((lead as char, 1, lead as u32)),
        0x80..=0xBF => return None,
        0xC0..=0xDF => (2, (lead & 0x1F) as u32),
        0xE0..=0xEF => (3, (lead & 0x0F) as u32),
        0xF0..=0xF7 => (4, (lead & 0x07) as u32),
        _ => return None,
    };
    if b.len() < len || !b[1..len].iter().all(|&c| c & 0xC0 == 0x80) {
        return None;
    }
    let cp = b[1..len]
        .iter()
        .fold(init, |acc, &c| (acc << 6) | (c & 0x3F) as u32);
    Some((char::from_u32(cp).unwrap_or('\u{FFFD}'), len, cp))
}

/// A code point's UTF-8 bytes, surrogates included (as llama.cpp's `unicode_cpt_to_utf8`);
/// `None` past U+10FFFF.
pub(super) fn encode_cp(cp: u32) -> Option<Vec<u8>> {
    Some(match cp {
        0..=0x7F => vec![cp as u8],
        0x80..=0x7FF => vec![0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8],
        0x800..=0xFFFF => vec![
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ],
        0x1_0000..=0x10_FFFF => vec![
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ],
        _ => return None,
    })
}
