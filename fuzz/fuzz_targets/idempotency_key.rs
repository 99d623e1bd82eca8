//! `Idempotency-Key` parsing against a model of the grammar: an RFC 8941 sf-string or a bare
//! value, optional spaces and tabs around it, then 1 to 255 visible ASCII characters without a
//! comma. A key written back (quoted, or bare) parses to the same key.
#![no_main]

use bulwark::idempotency::IdempotencyKey;
use libfuzzer_sys::fuzz_target;

/// What the key should be, written straight from the grammar.
fn model(input: &[u8]) -> Option<Vec<u8>> {
    let mut v = input;
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    let key = if v.first() == Some(&b'"') {
        // sf-string: `"` *( unescaped / "\" ( `"` / "\" ) ) `"`, nothing after.
        let mut out = Vec::new();
        let mut i = 1;
        loop {
            match v.get(i)? {
                b'\\' => {
                    let e = *v.get(i + 1)?;
                    if e != b'"' && e != b'\\' {
                        return None;
                    }
                    out.push(e);
                    i += 2;
                }
                b'"' => {
                    if i + 1 != v.len() {
                        return None;
                    }
                    break out;
                }
                &c if (0x20..=0x7e).contains(&c) => {
                    out.push(c);
                    i += 1;
                }
                _ => return None,
            }
        }
    } else {
        if v.contains(&b'"') {
            return None;
        }
        v.to_vec()
    };
    let ok = (1..=255).contains(&key.len())
        && key.iter().all(|&c| (b'!'..=b'~').contains(&c) && c != b',');
    ok.then_some(key)
}

fn quoted(key: &str) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &c in key.as_bytes() {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
    out
}

fuzz_target!(|data: &[u8]| {
    let parsed = IdempotencyKey::parse(data);
    let expected = model(data);
    assert_eq!(
        parsed.as_ref().ok().map(|k| k.as_str().as_bytes().to_vec()),
        expected,
        "input {data:?}: {parsed:?}"
    );
    if let Ok(key) = parsed {
        assert_eq!(
            IdempotencyKey::parse(&quoted(key.as_str())).as_ref(),
            Ok(&key)
        );
        if !key.as_str().contains('"') {
            assert_eq!(
                IdempotencyKey::parse(key.as_str().as_bytes()).as_ref(),
                Ok(&key)
            );
            let padded = format!(" \t{}\t ", key.as_str());
            assert_eq!(IdempotencyKey::parse(padded.as_bytes()).as_ref(), Ok(&key));
        }
        // `Debug` never shows the key (keys are credentials of a sort).
        let shown = format!("{key:?}");
        let digest = shown
            .strip_prefix("IdempotencyKey(sha256:")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{shown}"));
        assert!(
            !digest.is_empty() && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{shown}"
        );
    }
});
