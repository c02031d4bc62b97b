//! The `mllp` fuzz target's body; what it feeds and checks is documented in `fuzz_targets/mllp.rs`.

use radsight::mllp::{Deframer, END, Frame, START, frame};

fn feed(max: usize, stream: &[u8], pattern: u8) -> (Vec<Frame>, bool) {
    let mut d = Deframer::new(max);
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut i = 0usize;
    while !rest.is_empty() {
        // Read sizes 1..=16 from the pattern's bits, cycling.
        let n = (1 + ((pattern as usize).rotate_left(i as u32 % 8) % 16)).min(rest.len());
        frames.extend(d.push(&rest[..n]));
        rest = &rest[n..];
        i += 1;
    }
    (frames, d.in_frame())
}

pub fn run(data: &[u8]) {
    let [size, pattern, stream @ ..] = data else { return };
    let max = 1 + (*size as usize * 16) % 4096;

    let mut whole = Deframer::new(max);
    let frames = whole.push(stream);
    let (split, in_frame) = feed(max, stream, *pattern);
    assert_eq!(frames, split, "the frames depend on the read boundaries");
    assert_eq!(whole.in_frame(), in_frame);
    assert!(frames.len() <= stream.iter().filter(|&&b| b == START).count());
    for f in &frames {
        match f {
            Frame::Message(m) => assert!(m.len() <= max),
            Frame::TooLarge { head } => assert!(head.len() <= max.min(2048)),
        }
    }

    // Round trip: the stream cut into messages at every start byte and 0x1C (a message may hold
    // CRs, as HL7 does), framed again.
    let messages: Vec<&[u8]> = stream.split(|b| *b == START || *b == END[0]).filter(|m| m.len() <= max).collect();
    let wire: Vec<u8> = messages.iter().flat_map(|m| frame(m)).collect();
    let (back, in_frame) = feed(max, &wire, *pattern);
    assert!(!in_frame);
    let back: Vec<&[u8]> = back
        .iter()
        .map(|f| match f {
            Frame::Message(m) => m.as_slice(),
            Frame::TooLarge { .. } => panic!("a message within the limit was reported too large"),
        })
        .collect();
    assert_eq!(back, messages);
}
