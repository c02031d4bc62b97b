//! `multipart/related` bodies (RFC 2387), as WADO-RS returns them: the boundary comes from the
//! response's `Content-Type`, each part has its own headers and carries one DICOM instance.
//!
//! The body is untrusted: parsing never panics, never copies more than the body, and reports
//! a malformed body as an error naming what is wrong.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("the response is not multipart/related")]
    NotMultipartRelated,
    #[error("the Content-Type has no boundary parameter")]
    MissingBoundary,
    #[error("the body does not start with the boundary")]
    MissingOpeningBoundary,
    #[error("part {index} has no blank line after its headers")]
    UnterminatedHeaders { index: usize },
    #[error("part {index} is not followed by a boundary")]
    UnterminatedPart { index: usize },
}

/// One part: its `Content-Type` (if given) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    pub content_type: Option<String>,
    pub body: &'a [u8],
}

/// The boundary of a `multipart/related` Content-Type (quoted or not).
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/related") {
        return Err(MultipartError::NotMultipartRelated);
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or(MultipartError::MissingBoundary)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a multipart body into its parts.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, MultipartError> {
    let delimiter = format!("--{boundary}").into_bytes();
    let next_delimiter = format!("\r\n--{boundary}").into_bytes();
    // A preamble before the first boundary is allowed and ignored.
    let start = find(body, &delimiter).ok_or(MultipartError::MissingOpeningBoundary)?;
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts); // the close delimiter; an epilogue is ignored
        }
        let index = parts.len();
        // Transport padding, then the CRLF that ends the boundary line.
        let line_end = find(rest, b"\r\n").ok_or(MultipartError::UnterminatedPart { index })?;
        rest = &rest[line_end + 2..];
        let (headers, after) = if rest.starts_with(b"\r\n") {
            (&rest[..0], &rest[2..])
        } else {
            let end = find(rest, b"\r\n\r\n").ok_or(MultipartError::UnterminatedHeaders { index })?;
            (&rest[..end], &rest[end + 4..])
        };
        let content_type = String::from_utf8_lossy(headers)
            .split("\r\n")
            .filter_map(|h| h.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_owned());
        let end = find(after, &next_delimiter).ok_or(MultipartError::UnterminatedPart { index })?;
        parts.push(Part { content_type, body: &after[..end] });
        rest = &after[end + next_delimiter.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &[u8], expected: Result<Vec<(&str, &[u8])>, MultipartError>) {
        let got = parse(body, "XyZ")
            .map(|parts| parts.into_iter().map(|p| (p.content_type.unwrap_or_default(), p.body.to_vec())).collect::<Vec<_>>());
        let expected = expected.map(|v| v.into_iter().map(|(c, b)| (c.to_owned(), b.to_vec())).collect::<Vec<_>>());
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(body));
    }

    #[test]
    fn parts_are_split_on_the_boundary() {
        check(
            b"--XyZ\r\nContent-Type: application/dicom\r\n\r\nAB\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\n\r\nC\r\n--XyZ--\r\n",
            Ok(vec![("application/dicom", b"AB"), ("application/dicom", b"\r\nC")]),
        );
        // Preamble, transport padding, no headers, epilogue.
        check(b"preamble\r\n--XyZ  \r\n\r\nbody\r\n--XyZ--epilogue", Ok(vec![("", b"body")]));
        // A body that contains the boundary text without the leading CRLF is data.
        check(b"--XyZ\r\n\r\nx--XyZy\r\n--XyZ--", Ok(vec![("", b"x--XyZy")]));
        check(b"--XyZ--", Ok(vec![]));
        check(b"no boundary here", Err(MultipartError::MissingOpeningBoundary));
        check(b"--XyZ\r\nContent-Type: a\r\n", Err(MultipartError::UnterminatedHeaders { index: 0 }));
        check(b"--XyZ\r\n\r\ntruncated", Err(MultipartError::UnterminatedPart { index: 0 }));
    }

    #[test]
    fn the_boundary_is_read_from_the_content_type() {
        assert_eq!(boundary("multipart/related; type=\"application/dicom\"; boundary=\"abc 1\"").unwrap(), "abc 1");
        assert_eq!(boundary("Multipart/Related;boundary=abc;type=application/dicom").unwrap(), "abc");
        assert_eq!(boundary("application/dicom"), Err(MultipartError::NotMultipartRelated));
        assert_eq!(boundary("multipart/related; type=application/dicom"), Err(MultipartError::MissingBoundary));
    }

    #[test]
    fn random_bodies_never_panic() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let pieces: [&[u8]; 6] = [b"--XyZ", b"\r\n", b"\r\n\r\n", b"--", b"Content-Type: a", b"data"];
        for _ in 0..5000 {
            let mut body = Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut y = x;
            for _ in 0..(x % 12) {
                y = y.wrapping_mul(6364136223846793005).wrapping_add(1);
                match (y >> 60) % 4 {
                    0 => body.push((y >> 20) as u8),
                    _ => body.extend_from_slice(pieces[((y >> 40) % 6) as usize]),
                }
            }
            if let Ok(parts) = parse(&body, "XyZ") {
                assert!(parts.iter().map(|p| p.body.len()).sum::<usize>() <= body.len());
            }
        }
    }
}
