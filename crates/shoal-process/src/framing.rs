//! Splitting the IPC byte stream into lines (one JSON value each), with a cap
//! on a line's size: an over-long line is reported once and skipped up to its
//! newline, without holding it in memory.

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line (without its `\n`), with its 1-based number.
    Line(u64, Vec<u8>),
    /// Line number N was longer than the cap and is discarded.
    TooLarge(u64),
}

/// Incremental line splitter.
#[derive(Debug)]
pub struct Framer {
    line: Vec<u8>,
    discarding: bool,
    line_no: u64,
    max: usize,
}

impl Framer {
    /// A framer accepting lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Framer {
            line: Vec::new(),
            discarding: false,
            line_no: 0,
            max,
        }
    }

    /// Feed bytes as they arrive; complete lines go to `out`, in order.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Frame>) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if self.discarding {
                        self.discarding = false;
                    } else if self.line.len() + i > self.max {
                        self.line.clear();
                        self.line_no += 1;
                        out.push(Frame::TooLarge(self.line_no));
                    } else {
                        self.line.extend_from_slice(&data[..i]);
                        self.line_no += 1;
                        out.push(Frame::Line(self.line_no, std::mem::take(&mut self.line)));
                    }
                    data = &data[i + 1..];
                }
                None => {
                    if !self.discarding {
                        self.line.extend_from_slice(data);
                        if self.line.len() > self.max {
                            self.line = Vec::new();
                            self.line_no += 1;
                            self.discarding = true;
                            out.push(Frame::TooLarge(self.line_no));
                        }
                    }
                    data = &[];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn feed(f: &mut Framer, bytes: &[u8], cuts: &[usize]) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts {
            let c = c.min(bytes.len());
            if c > at {
                f.push(&bytes[at..c], &mut out);
                at = c;
            }
        }
        f.push(&bytes[at..], &mut out);
        out
    }

    proptest! {
        /// Any sequence of JSON strings (with newlines, U+2028, NUL, any
        /// Unicode), encoded as Node does and cut anywhere, comes back whole.
        #[test]
        fn json_lines_survive_any_split(
            msgs in proptest::collection::vec(any::<String>(), 0..20),
            mut cuts in proptest::collection::vec(0usize..4000, 0..30),
        ) {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend(serde_json::to_vec(&Value::from(m.as_str())).unwrap());
                wire.push(b'\n');
            }
            cuts.sort();
            let frames = feed(&mut Framer::new(1 << 20), &wire, &cuts);
            let got: Vec<String> = frames.into_iter().map(|f| match f {
                Frame::Line(_, l) => serde_json::from_slice::<String>(&l).unwrap(),
                Frame::TooLarge(n) => panic!("line {n} too large"),
            }).collect();
            prop_assert_eq!(got, msgs);
        }

        /// Garbage never panics, and every newline ends exactly one frame.
        #[test]
        fn arbitrary_bytes_give_one_frame_per_newline(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            max in 1usize..64,
            mut cuts in proptest::collection::vec(0usize..2000, 0..10),
        ) {
            cuts.sort();
            let frames = feed(&mut Framer::new(max), &bytes, &cuts);
            let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
            // A too-long line is reported when it passes the cap, so a final
            // unterminated line may add one frame.
            prop_assert!(frames.len() == newlines || frames.len() == newlines + 1);
            for f in &frames {
                if let Frame::Line(_, l) = f {
                    prop_assert!(l.len() <= max);
                }
            }
        }
    }

    #[test]
    fn oversized_line_is_reported_once_and_skipped() {
        let mut f = Framer::new(4);
        let out = feed(&mut f, b"ab\nabcdefgh\nxy\n", &[5, 7]);
        assert_eq!(
            out,
            [
                Frame::Line(1, b"ab".to_vec()),
                Frame::TooLarge(2),
                Frame::Line(3, b"xy".to_vec())
            ]
        );
    }
}
