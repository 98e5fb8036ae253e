//! Checks a SentencePiece `precompiled_charsmap` (the Precompiled normaliser of umT5's
//! `tokenizer.json`) before `tokenizers` loads it: `tokenizers` panics on one it cannot parse, and
//! its trie lookup (`spm_precompiled`) indexes the double array with offsets taken from the data
//! and slices the normalised strings at values taken from it, without bounds checks. A charsmap
//! that passes here cannot make either panic, whatever text is then normalised.
//!
//! Layout: a little-endian u32 byte size of the trie, the trie as little-endian u32 units (a
//! double-array trie keyed by UTF-8 bytes), then the NUL-separated replacement strings.

use base64::Engine;
use std::collections::HashSet;

/// `Ok` when `encoded` (base64, as in `tokenizer.json`) is a charsmap the lookup can use safely.
pub fn check(encoded: &str) -> Result<(), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("not base64: {e}"))?;
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let trie_size = word(0).ok_or("shorter than its 4-byte trie size")?;
    let units = trie_size / 4;
    let array: Vec<usize> = (0..units)
        .map(|i| word(4 + 4 * i))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            format!(
                "its trie of {trie_size} bytes runs past the end ({} bytes)",
                bytes.len()
            )
        })?;
    let normalized = std::str::from_utf8(&bytes[4 + 4 * units..])
        .map_err(|e| format!("its replacement strings are not UTF-8: {e}"))?;
    check_trie(&array, normalized)
}

fn offset(unit: usize) -> usize {
    (unit >> 10) << ((unit & (1 << 9)) >> 6)
}

fn label(unit: usize) -> usize {
    unit & ((1 << 31) | 0xFF)
}

fn has_leaf(unit: usize) -> bool {
    (unit >> 8) & 1 == 1
}

fn value(unit: usize) -> usize {
    unit & ((1 << 31) - 1)
}

/// Walks every node a lookup can reach, checking each index the lookup would use.
fn check_trie(array: &[usize], normalized: &str) -> Result<(), String> {
    let root = *array.first().ok_or("its trie is empty")?;
    let mut todo = vec![offset(root)];
    let mut seen = HashSet::new();
    while let Some(node) = todo.pop() {
        if !seen.insert(node) {
            continue;
        }
        for c in 1..=255usize {
            let at = node ^ c;
            let unit = *array
                .get(at)
                .ok_or_else(|| format!("its trie points past its end ({at} of {} units)", array.len()))?;
            if label(unit) != c {
                continue;
            }
            let next = at ^ offset(unit);
            if has_leaf(unit) {
                let leaf = *array
                    .get(next)
                    .ok_or_else(|| format!("a trie leaf points past its end ({next} of {} units)", array.len()))?;
                let v = value(leaf);
                if v > normalized.len() || !normalized.is_char_boundary(v) {
                    return Err(format!(
                        "a trie leaf points at byte {v}, not a character of its {} bytes of replacements",
                        normalized.len()
                    ));
                }
            }
            todo.push(next);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(trie: &[u32], normalized: &[u8]) -> String {
        let mut b = ((trie.len() * 4) as u32).to_le_bytes().to_vec();
        for u in trie {
            b.extend(u.to_le_bytes());
        }
        b.extend(normalized);
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn malformed_charsmaps_are_named() {
        assert!(check("!").unwrap_err().contains("not base64"));
        assert!(check("AAA=").unwrap_err().contains("shorter than"));
        assert!(check(&encode(&[], b"")).unwrap_err().contains("trie is empty"));
        // A root whose children lie past the end of a one-unit trie (the fuzzer's second find).
        assert!(check(&encode(&[0], b"")).unwrap_err().contains("points past its end"));
        assert!(check(&encode(&[0], b"\xff")).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn a_trie_whose_every_lookup_stays_in_bounds_passes() {
        // 256 units, all label 0: every child slot of the root (offset 0) exists and none matches.
        assert_eq!(check(&encode(&[0; 256], b"")), Ok(()));
        // Byte 'a' (0x61) at slot 0x61 with a leaf at 0x61 ^ 0 whose value points into "x\0".
        let mut trie = vec![0u32; 256];
        trie[0x61] = 0x61 | (1 << 8);
        assert!(
            check(&encode(&trie, b"x\0")).unwrap_err().contains("not a character"),
            "the leaf is the unit itself, whose value (0x161) is past the replacements"
        );
    }
}
