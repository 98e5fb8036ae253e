//! WanPipeline's `prompt_clean` (diffusers `pipeline_wan.py`, spec §3 step 1), reproduced
//! character for character:
//!
//! ```python
//! text = ftfy.fix_text(text)                    # only if ftfy is installed: NOT reproduced here
//! text = html.unescape(html.unescape(text)).strip()
//! text = regex.sub(r"\s+", " ", text).strip()
//! ```
//!
//! - [`html_unescape`] is Python's `html.unescape`: the same character-reference pattern, the
//!   HTML5 named references (the WHATWG table, which `htmlize::ENTITIES` holds: the same 2,231
//!   entries as Python's `html.entities.html5`) with the longest-prefix rule for legacy names
//!   without `;`, and Python's handling of numeric references (Windows-1252 remapping of 0x80–0x9F,
//!   U+FFFD for 0, surrogates and > U+10FFFF, and *removal* of the other invalid code points).
//! - Two whitespace sets are involved: `str.strip()` strips `str.isspace()` characters, which
//!   include U+001C–U+001F; the `regex` module's `\s` is Unicode White_Space, which does not
//!   (it equals Rust's [`char::is_whitespace`]).
//! - `ftfy.fix_text` is Python-only. diffusers applies it only when ftfy is installed (it is not
//!   a diffusers dependency, nor installed where the goldens were made). Where it is installed it
//!   also rewrites the prompt before tokenising: it repairs mojibake (`Ã©` → `é`), turns curly
//!   quotes into straight ones, expands ligatures, NFC-normalises, and removes terminal escapes and
//!   some control characters. Prompts containing such text then tokenise differently from this
//!   port (and from a diffusers install without ftfy); plain text is unaffected.

use htmlize::ENTITIES;

/// WanPipeline's `prompt_clean` without ftfy (see the module doc).
pub fn prompt_clean(text: &str) -> String {
    let unescaped = html_unescape(&html_unescape(text));
    let mut out = String::with_capacity(unescaped.len());
    let mut in_space = false;
    for c in py_strip(&unescaped).chars() {
        if c.is_whitespace() {
            in_space = true;
        } else {
            if in_space {
                out.push(' ');
                in_space = false;
            }
            out.push(c);
        }
    }
    // `py_strip` left no white space at either end, so no run was pending at the end and the
    // pipeline's second `strip()` has nothing left to remove.
    out
}

/// Python's `str.strip()` with no argument.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// `str.isspace()` for one character: Unicode White_Space plus the separators U+001C–U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `html.unescape` (see the module doc).
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match char_reference(after) {
            Some((consumed, replacement)) => {
                out.push_str(&replacement);
                rest = &after[consumed..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Matches Python's `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)` at the start of `s`
/// (the text after `&`): the number of bytes consumed and the replacement.
fn char_reference(s: &str) -> Option<(usize, String)> {
    if let Some(num) = s.strip_prefix('#') {
        let (digits, radix, prefix) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (
                hex.len() - hex.trim_start_matches(|c: char| c.is_ascii_hexdigit()).len(),
                16,
                2,
            ),
            None => (
                num.len() - num.trim_start_matches(|c: char| c.is_ascii_digit()).len(),
                10,
                1,
            ),
        };
        if digits == 0 {
            return None;
        }
        let end = prefix + digits;
        let semicolon = usize::from(s[end..].starts_with(';'));
        return Some((end + semicolon, numeric_reference(&s[prefix..end], radix)));
    }
    let name_len: usize = s
        .chars()
        .take_while(|c| !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
        .take(32)
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let end = name_len + usize::from(s[name_len..].starts_with(';'));
    let name = &s[..end];
    if let Some(expansion) = entity(name) {
        return Some((end, expansion.to_string()));
    }
    // Longest prefix (of at least 2 characters, shorter than the whole) that is a named reference;
    // only the legacy names without ';' can match here.
    let boundaries: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in boundaries.iter().rev() {
        if let Some(expansion) = entity(&name[..cut]) {
            return Some((end, format!("{expansion}{}", &name[cut..])));
        }
    }
    Some((end, format!("&{name}")))
}

/// The expansion of a named reference (`name` without the `&`, with its `;` if it has one).
fn entity(name: &str) -> Option<&'static str> {
    let key = format!("&{name}");
    ENTITIES
        .get(key.as_bytes())
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
}

/// Python's numeric reference rules for the digits `digits` in `radix`.
fn numeric_reference(digits: &str, radix: u32) -> String {
    // Digit strings too long for u32 are far above U+10FFFF, which Python maps to U+FFFD.
    let num = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
    if let Some(c) = windows_1252_or_special(num) {
        return c.to_string();
    }
    if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        return '\u{FFFD}'.to_string();
    }
    if is_invalid_codepoint(num) {
        return String::new();
    }
    char::from_u32(num)
        .map(String::from)
        .unwrap_or_else(|| '\u{FFFD}'.to_string())
}

/// Python's `_invalid_charrefs`: 0 → U+FFFD, CR kept, and 0x80–0x9F read as Windows-1252.
fn windows_1252_or_special(num: u32) -> Option<char> {
    const C1: [char; 32] = [
        '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{2c6}',
        '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}',
        '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}',
        '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
    ];
    match num {
        0 => Some('\u{FFFD}'),
        0x0d => Some('\r'),
        0x80..=0x9f => C1.get((num - 0x80) as usize).copied(),
        _ => None,
    }
}

/// Python's `_invalid_codepoints`: C0 controls but tab, LF, FF, CR; DEL and C1; the
/// noncharacters U+FDD0–U+FDEF and U+xFFFE / U+xFFFF of every plane.
fn is_invalid_codepoint(num: u32) -> bool {
    matches!(num, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef) || (num & 0xfffe) == 0xfffe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_follows_python() {
        // Expected values from Python 3.11's html.unescape.
        let cases = [
            ("&amp;lt;", "&lt;"),
            ("&lt;b&gt;", "<b>"),
            ("&ampx &amp &AMP;", "&x & &"),
            ("&notit; &notin;", "¬it; ∉"),
            ("&#0;&#13;&#128;&#x80;&#150;", "\u{fffd}\r€€–"),
            ("&#x110000;&#xD800;&#1114111;", "\u{fffd}\u{fffd}"),
            ("&#65&#x41&#X41;", "AAA"),
            ("&#; &#x; & ; &bogus; a&b", "&#; &#x; & ; &bogus; a&b"),
            ("&#00000000000000000000000065;", "A"),
            ("&NotNestedGreaterGreater;", "\u{2aa2}\u{338}"),
            ("&#127;&#xFDD0;&#x1FFFF;x", "x"),
        ];
        for (input, want) in cases {
            assert_eq!(html_unescape(input), want, "{input:?}");
        }
    }

    #[test]
    fn clean_strips_python_space_and_collapses_white_space() {
        assert_eq!(prompt_clean("  a \t\n b\u{3000}c  "), "a b c");
        // U+001C is stripped at the ends but is not `\s` inside.
        assert_eq!(prompt_clean("\u{1c} a \u{1c} b \u{1c}"), "a \u{1c} b");
        assert_eq!(prompt_clean("&amp;nbsp;x"), "x");
        assert_eq!(prompt_clean(""), "");
    }
}
