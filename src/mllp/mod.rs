//! MLLP, the HL7 v2 transport both directions share (the listener in `hl7`, the ORU sender in
//! `outbox`): framing here, and TLS in [`tls`].
//!
//! MLLP framing (Minimal Lower Layer Protocol): each message travels as `0x0B` + message +
//! `0x1C 0x0D`.
//!
//! [`Deframer`] is fed whatever bytes arrive and hands back complete frames. It never panics
//! and never holds more than `max_message_bytes` of one message: a longer message is reported
//! as [`Frame::TooLarge`] (with its first bytes, so its MSH can still be answered) and the rest
//! of it is skipped up to its end marker. Bytes outside a frame (line noise, keep-alive
//! newlines) are skipped.

pub mod tls;

pub const START: u8 = 0x0B;
pub const END: [u8; 2] = [0x1C, 0x0D];

/// How many bytes of an oversized message are kept so that its MSH can be read for the ACK.
const TOO_LARGE_HEAD: usize = 2048;

/// Wraps one message in an MLLP frame.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.extend_from_slice(&END);
    out
}

/// What the deframer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message, without its framing bytes.
    Message(Vec<u8>),
    /// A message longer than the limit; `head` is its first bytes.
    TooLarge { head: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a start byte.
    Idle,
    /// Inside a message.
    InFrame,
    /// Inside a message that passed the limit: skipping to its end.
    Skipping,
}

#[derive(Debug)]
pub struct Deframer {
    max_message_bytes: usize,
    state: State,
    buf: Vec<u8>,
    /// The previous byte was 0x1C inside a frame (the end marker may be split across reads).
    pending_fs: bool,
}

impl Deframer {
    pub fn new(max_message_bytes: usize) -> Deframer {
        Deframer { max_message_bytes, state: State::Idle, buf: Vec::new(), pending_fs: false }
    }

    /// True while part of a message has been received but not its end.
    pub fn in_frame(&self) -> bool {
        self.state != State::Idle
    }

    /// Feeds received bytes; returns every frame they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        for &b in bytes {
            match self.state {
                State::Idle => {
                    if b == START {
                        self.state = State::InFrame;
                        self.buf.clear();
                        self.pending_fs = false;
                    }
                }
                State::InFrame | State::Skipping => {
                    if self.pending_fs {
                        self.pending_fs = false;
                        if b == END[1] {
                            frames.push(self.finish());
                            continue;
                        }
                        // A lone 0x1C is data.
                        self.keep(END[0]);
                    }
                    if b == END[0] {
                        self.pending_fs = true;
                    } else if b == START && self.state == State::InFrame && self.buf.is_empty() {
                        // A repeated start byte: still the beginning of the message.
                    } else if b == START {
                        // A start byte inside a message: the sender gave up on the previous
                        // one. Drop it and start again.
                        self.state = State::InFrame;
                        self.buf.clear();
                    } else {
                        self.keep(b);
                    }
                }
            }
        }
        frames
    }

    fn keep(&mut self, b: u8) {
        match self.state {
            State::InFrame if self.buf.len() < self.max_message_bytes => self.buf.push(b),
            State::InFrame => {
                self.buf.truncate(TOO_LARGE_HEAD);
                self.state = State::Skipping;
            }
            _ => {}
        }
    }

    fn finish(&mut self) -> Frame {
        let buf = std::mem::take(&mut self.buf);
        let frame = if self.state == State::Skipping { Frame::TooLarge { head: buf } } else { Frame::Message(buf) };
        self.state = State::Idle;
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so the fuzz cases are reproducible from their seed.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn messages(frames: Vec<Frame>) -> Vec<Vec<u8>> {
        frames
            .into_iter()
            .map(|f| match f {
                Frame::Message(m) => m,
                Frame::TooLarge { .. } => panic!("unexpected TooLarge"),
            })
            .collect()
    }

    fn check(chunks: &[&[u8]], max: usize, expected: &[Frame]) {
        let mut d = Deframer::new(max);
        let got: Vec<Frame> = chunks.iter().flat_map(|c| d.push(c)).collect();
        assert_eq!(got, expected, "chunks {chunks:?}");
    }

    #[test]
    fn frames_are_found_whatever_the_read_boundaries() {
        let m = |s: &str| Frame::Message(s.as_bytes().to_vec());
        check(&[b"\x0bMSH|a\x1c\x0d"], 100, &[m("MSH|a")]);
        check(&[b"\x0bMSH|a\x1c", b"\x0d"], 100, &[m("MSH|a")]);
        check(&[b"\x0bMS", b"H|a\x1c\x0d\x0bMSH|b\x1c\x0d"], 100, &[m("MSH|a"), m("MSH|b")]);
        // Noise between frames is skipped; a lone 0x1C is data.
        check(&[b"\r\n\x0bA\x1cB\x1c\x0d junk"], 100, &[m("A\x1cB")]);
        // A new start byte abandons a half-received message.
        check(&[b"\x0bhalf\x0bwhole\x1c\x0d"], 100, &[m("whole")]);
        check(&[b"\x0b\x1c\x0d"], 100, &[m("")]);
    }

    #[test]
    fn an_oversized_message_is_reported_with_its_head_and_the_next_one_still_arrives() {
        let mut d = Deframer::new(8);
        let frames = d.push(b"\x0bMSH|0123456789\x1c\x0d\x0bMSH|ok\x1c\x0d");
        assert_eq!(frames, vec![Frame::TooLarge { head: b"MSH|0123".to_vec() }, Frame::Message(b"MSH|ok".to_vec())]);
        assert!(!d.in_frame());
    }

    #[test]
    fn random_bytes_never_panic_and_never_exceed_the_limit() {
        for seed in 1..=300u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let max = 1 + rng.below(64);
            let mut d = Deframer::new(max);
            for _ in 0..50 {
                // Bias towards the framing bytes so that every state is visited.
                let len = rng.below(40);
                let bytes: Vec<u8> = (0..len)
                    .map(|_| match rng.below(6) {
                        0 => START,
                        1 => END[0],
                        2 => END[1],
                        _ => rng.next() as u8,
                    })
                    .collect();
                for f in d.push(&bytes) {
                    match f {
                        Frame::Message(m) => assert!(m.len() <= max, "seed {seed}"),
                        Frame::TooLarge { head } => assert!(head.len() <= max.min(TOO_LARGE_HEAD), "seed {seed}"),
                    }
                }
            }
        }
    }

    #[test]
    fn framed_messages_survive_any_split() {
        for seed in 1..=200u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
            let originals: Vec<Vec<u8>> =
                (0..1 + rng.below(5)).map(|_| (0..rng.below(100)).map(|_| b' ' + (rng.next() % 90) as u8).collect()).collect();
            let wire: Vec<u8> = originals.iter().flat_map(|m| frame(m)).collect();
            let mut d = Deframer::new(1000);
            let mut got = Vec::new();
            let mut rest = wire.as_slice();
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len());
                got.extend(d.push(&rest[..n]));
                rest = &rest[n..];
            }
            assert_eq!(messages(got), originals, "seed {seed}");
        }
    }
}
