//! The `multipart` fuzz target's body; what it feeds and checks is documented in `fuzz_targets/multipart.rs`.

use radsight::dicomweb::multipart::{Part, boundary, parse};

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn write(parts: &[Part], boundary: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        if let Some(ct) = &p.content_type {
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

pub fn run(data: &[u8]) {
    let (first, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let content_type = String::from_utf8_lossy(first);
    let b = boundary(&content_type).unwrap_or_else(|_| "XyZ".to_owned());
    let Ok(parts) = parse(body, &b) else { return };

    let range = body.as_ptr_range();
    for p in &parts {
        let r = p.body.as_ptr_range();
        assert!(range.start <= r.start && r.end <= range.end, "a part outside the body");
    }
    assert!(parts.iter().map(|p| p.body.len()).sum::<usize>() <= body.len());

    let delimiter = format!("\r\n--{b}").into_bytes();
    let unambiguous = parts.iter().all(|p| {
        let mut tail = p.body.to_vec();
        tail.extend_from_slice(&delimiter);
        find(&tail, &delimiter) == Some(p.body.len())
    }) && parts.iter().all(|p| p.content_type.as_deref().is_none_or(|c| !c.contains("\r\n")));
    if unambiguous {
        let again = write(&parts, &b);
        let back = parse(&again, &b).unwrap_or_else(|e| panic!("the written body does not parse: {e}"));
        assert_eq!(back, parts);
    }
}
