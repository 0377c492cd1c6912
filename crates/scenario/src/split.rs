//! Cutting a scenario's `[[vm]]` tables out of its text, so that a fleet
//! written VM by VM never becomes one document tree.
//!
//! A million explicit `[[vm]]` tables (an export from a real inventory) are
//! about 50 MB of text. Read as one TOML document they became a tree of
//! every key, value, span and bit of whitespace (the toml crate's), a second
//! tree of positions (the [`crate::locate::Locator`]'s) and the typed
//! structs, all at once: 2.6 GB. Cut out, the rest of the file (hosts,
//! network, groups) is read as before, and each `[[vm]]` table is read on its
//! own, by the same serde code, and dropped once it is a VM: the memory is
//! the text, the fleet and one table at a time.
//!
//! The cut is made by a small scanner that knows just enough TOML to find
//! the table headers: strings (basic, literal, multi-line, with their
//! escapes), comments, and the brackets of arrays and inline tables, inside
//! which a line starting with `[` is a value rather than a header. Each
//! `[[vm]]` table runs from its header to the next header or the end; in the
//! copy of the text handed to the TOML parser it is blanked (every byte but
//! the line ends a space), so every offset and line of the rest is that of
//! the file.
//!
//! When anything else in the file names `vm` (a `[vm]` or `[vm.disk]`
//! header, a top-level `vm = ...` key), the meaning of the tables depends on
//! it: [`split`] then declines and the file is read whole, as before.

use std::ops::Range;

/// The key of the arrays of tables cut out.
pub(crate) const SPLIT_ARRAY: &str = "vm";

/// A scenario's text with its `[[vm]]` tables cut out.
#[derive(Debug)]
pub(crate) struct Split {
    /// The text with every `[[vm]]` table blanked: same length, same lines.
    pub rest: String,
    /// Where each `[[vm]]` table is in the text, header included, in order.
    pub tables: Vec<Range<usize>>,
}

/// Cuts the `[[vm]]` tables out of `text`; `None` when it has none or when
/// something else in it names `vm` (then it is read whole).
pub(crate) fn split(text: &str) -> Option<Split> {
    let headers = headers(text)?;
    let mut tables = Vec::new();
    for (i, header) in headers.iter().enumerate() {
        match header.kind {
            HeaderKind::VmArray => {
                let end = headers.get(i + 1).map_or(text.len(), |next| next.start);
                tables.push(header.start..end);
            }
            HeaderKind::TouchesVm => return None,
            HeaderKind::Other => {}
        }
    }
    if tables.is_empty() {
        return None;
    }
    let mut rest = text.as_bytes().to_vec();
    for table in &tables {
        for byte in &mut rest[table.clone()] {
            if *byte != b'\n' && *byte != b'\r' {
                *byte = b' ';
            }
        }
    }
    // Whole tables were replaced, each starting at a line start and ending
    // at one (or at the end): no multi-byte character was cut.
    let rest = String::from_utf8(rest).ok()?;
    Some(Split { rest, tables })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderKind {
    /// `[[vm]]`.
    VmArray,
    /// Any other header whose key starts with `vm` (`[vm]`, `[vm.x]`,
    /// `[[vm.x]]`, `["vm"]`).
    TouchesVm,
    Other,
}

#[derive(Debug)]
struct Header {
    /// The offset of the line the header is on.
    start: usize,
    kind: HeaderKind,
}

/// Every table header of `text`, in order; `None` when a top-level key
/// (before the first header) is `vm`.
fn headers(text: &str) -> Option<Vec<Header>> {
    let bytes = text.as_bytes();
    let mut headers = Vec::new();
    // Open `[` and `{` of values; a header is a line starting with `[` at 0.
    let mut depth: usize = 0;
    let mut i = 0;
    while i < bytes.len() {
        // At a line start, outside any string.
        let line_start = i;
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        if depth == 0 && i < bytes.len() && bytes[i] == b'[' {
            let (kind, end) = header(bytes, i);
            headers.push(Header {
                start: line_start,
                kind,
            });
            i = end;
        } else if depth == 0 && headers.is_empty() && key_is_vm(&bytes[i..]) {
            return None;
        }
        // The rest of the line; strings may carry it over further lines.
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    i += 1;
                    break;
                }
                b'#' => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b'"' | b'\'' => i = skip_string(bytes, i),
                b'[' | b'{' => {
                    depth += 1;
                    i += 1;
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                _ => i += 1,
            }
        }
    }
    Some(headers)
}

/// Reads the header at `bytes[at] == b'['`: its kind and the offset where
/// the rest of its line (a comment, the line end) starts.
fn header(bytes: &[u8], at: usize) -> (HeaderKind, usize) {
    let double = bytes.get(at + 1) == Some(&b'[');
    let mut i = at + if double { 2 } else { 1 };
    let key_start = i;
    while i < bytes.len() && bytes[i] != b']' && bytes[i] != b'\n' {
        if bytes[i] == b'"' || bytes[i] == b'\'' {
            i = skip_string(bytes, i);
        } else {
            i += 1;
        }
    }
    let key = &bytes[key_start..i.min(bytes.len())];
    // Past the closing brackets.
    while i < bytes.len() && bytes[i] == b']' {
        i += 1;
    }
    let kind = if double && trim(key) == SPLIT_ARRAY.as_bytes() {
        HeaderKind::VmArray
    } else if key_is_vm(trim(key)) {
        HeaderKind::TouchesVm
    } else {
        HeaderKind::Other
    };
    (kind, i)
}

/// Whether a key (at the start of `bytes`) is `vm`, bare or quoted, alone
/// or as the first part of a dotted key.
fn key_is_vm(bytes: &[u8]) -> bool {
    let rest = if let Some(rest) = bytes.strip_prefix(b"vm") {
        rest
    } else if let Some(rest) = bytes
        .strip_prefix(b"\"vm\"")
        .or_else(|| bytes.strip_prefix(b"'vm'"))
    {
        rest
    } else {
        return false;
    };
    // `vm`, `vm.x`, `vm = `, but not `vm_group` or `vms`.
    matches!(rest.first(), None | Some(b' ' | b'\t' | b'.' | b'=' | b']'))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

/// The offset just past the string starting at `bytes[at]` (a `"` or `'`):
/// basic and literal, single- and multi-line. An unterminated string runs
/// to the end of its line (single-line) or of the text (multi-line): the
/// TOML parser then says what is wrong.
fn skip_string(bytes: &[u8], at: usize) -> usize {
    let quote = bytes[at];
    let escapes = quote == b'"';
    let triple = bytes.get(at..at + 3) == Some(&[quote, quote, quote][..]);
    let mut i = at + if triple { 3 } else { 1 };
    while i < bytes.len() {
        let b = bytes[i];
        if escapes && b == b'\\' {
            i += 2;
            continue;
        }
        if !triple && b == b'\n' {
            return i;
        }
        if b == quote {
            if !triple {
                return i + 1;
            }
            if bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]) {
                // Up to two more quotes belong to the content: `""""` ends
                // a string whose last character is `"`.
                let mut end = i + 3;
                while end < i + 5 && bytes.get(end) == Some(&quote) {
                    end += 1;
                }
                return end;
            }
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(text: &str) -> Option<Vec<&str>> {
        split(text).map(|s| s.tables.into_iter().map(|r| &text[r]).collect())
    }

    #[test]
    fn cuts_each_vm_table_up_to_the_next_header() {
        let text = "seed = 1\n[[vm]]\nname = \"a\"\n\n[[host]]\nname = \"h\"\n  [[vm]] # b\nname = \"b\"\n";
        assert_eq!(
            tables(text).unwrap(),
            ["[[vm]]\nname = \"a\"\n\n", "  [[vm]] # b\nname = \"b\"\n"]
        );
        let split = split(text).unwrap();
        assert_eq!(split.rest.len(), text.len());
        assert_eq!(
            split.rest,
            "seed = 1\n      \n          \n\n[[host]]\nname = \"h\"\n            \n          \n"
        );
    }

    #[test]
    fn headers_inside_strings_and_arrays_are_values() {
        let text = "a = \"\"\"\n[[vm]]\n\"\"\"\nb = [\n[1],\n]\nc = '''\n[[vm]]'''\nd = \"[[vm]]\"\n";
        assert_eq!(tables(text), None);
        // A multi-line array's lines starting with `[` are not headers; the
        // table after it is.
        let text = "x = [\n  [1, 2],\n  \"]\",\n]\n[[vm]]\nname = \"a\"\n";
        assert_eq!(tables(text).unwrap(), ["[[vm]]\nname = \"a\"\n"]);
        // Escaped quotes and quotes closing a multi-line string.
        let text = "s = \"\\\"[\"\nt = \"\"\"a\"\"\"\"\n[[vm]]\nname = \"a\"\n";
        assert_eq!(tables(text).unwrap(), ["[[vm]]\nname = \"a\"\n"]);
        // A comment's bracket opens nothing.
        let text = "a = 1 # [\n[[vm]]\nname = \"a\"\n";
        assert_eq!(tables(text).unwrap(), ["[[vm]]\nname = \"a\"\n"]);
    }

    #[test]
    fn declines_when_something_else_names_vm() {
        for text in [
            "vm = []\n[[vm]]\nname = \"a\"\n",
            "vm.x = 1\n[[vm]]\nname = \"a\"\n",
            "\"vm\" = 1\n[[vm]]\nname = \"a\"\n",
            "[[vm]]\nname = \"a\"\n[vm.disk]\nsize = 1\n",
            "[[vm]]\nname = \"a\"\n[ \"vm\" ]\n",
            "[[vm . x]]\n[[vm]]\n",
            "[[vm_group]]\nprefix = \"g\"\n",
        ] {
            assert_eq!(tables(text), None, "{text}");
        }
        // Keys that only start like `vm` do not count.
        assert!(tables("vms = 1\n[[vm_group]]\n[[vm]]\nname = \"a\"\n").is_some());
    }
}
