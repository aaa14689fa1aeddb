//! Finding the end of a chunked body (RFC 9112 §7.1) in bytes that are forwarded as they are:
//! the fast path relays chunked responses without re-encoding them, so it only needs to know
//! where the last chunk and the trailer section end.

/// Longest chunk-size line accepted (size, extensions and line end), as hyper limits it.
const MAX_SIZE_LINE: usize = 4096;
/// Most bytes of trailer fields accepted after the last chunk.
const MAX_TRAILERS: usize = 64 * 1024;

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the hex digits of a chunk size.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: extensions (or whitespace) until the line end.
    Extension {
        value: u64,
    },
    /// After a `\r` that ends the size line.
    SizeLf {
        value: u64,
    },
    /// Inside a chunk's data.
    Data {
        left: u64,
    },
    /// After a chunk's data: its `\r\n`.
    DataCr,
    DataLf,
    /// In the trailer section; `line` counts the bytes of the current field line.
    Trailer {
        line: usize,
    },
    /// After a `\r` in the trailer section.
    TrailerLf {
        line: usize,
    },
    Done,
}

/// Scans a chunked body piece by piece.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    state: State,
    /// Bytes of the current size line, or of the whole trailer section.
    seen: usize,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            seen: 0,
        }
    }
}

impl Scanner {
    /// Feeds the next bytes of the body. Returns `Some(n)` when the body ends after the first
    /// `n` of them, `None` when all of them belong to it and more are needed.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data { left } = self.state {
                // Skip data in one step rather than byte by byte.
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data { left: left - take }
                };
                continue;
            }
            self.step(bytes[i])?;
            i += 1;
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn step(&mut self, byte: u8) -> Result<(), Malformed> {
        self.state = match self.state {
            State::Size { value, digits } => {
                self.line_byte(MAX_SIZE_LINE)?;
                match hex(byte) {
                    Some(d) if digits < 16 => State::Size {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    _ if digits == 0 => return Err(Malformed),
                    Some(_) => return Err(Malformed),
                    None => match byte {
                        b'\r' => State::SizeLf { value },
                        b'\n' => self.after_size(value),
                        b';' | b' ' | b'\t' => State::Extension { value },
                        _ => return Err(Malformed),
                    },
                }
            }
            State::Extension { value } => {
                self.line_byte(MAX_SIZE_LINE)?;
                match byte {
                    b'\r' => State::SizeLf { value },
                    b'\n' => self.after_size(value),
                    _ => State::Extension { value },
                }
            }
            State::SizeLf { value } if byte == b'\n' => self.after_size(value),
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataCr | State::DataLf if byte == b'\n' => {
                self.seen = 0;
                State::Size {
                    value: 0,
                    digits: 0,
                }
            }
            State::Trailer { line } => {
                self.line_byte(MAX_TRAILERS)?;
                match byte {
                    b'\r' => State::TrailerLf { line },
                    b'\n' if line == 0 => State::Done,
                    b'\n' => State::Trailer { line: 0 },
                    _ => State::Trailer { line: line + 1 },
                }
            }
            State::TrailerLf { line } if byte == b'\n' => {
                if line == 0 {
                    State::Done
                } else {
                    State::Trailer { line: 0 }
                }
            }
            State::SizeLf { .. }
            | State::DataCr
            | State::DataLf
            | State::TrailerLf { .. }
            | State::Data { .. }
            | State::Done => return Err(Malformed),
        };
        Ok(())
    }

    fn after_size(&mut self, value: u64) -> State {
        self.seen = 0;
        if value == 0 {
            State::Trailer { line: 0 }
        } else {
            State::Data { left: value }
        }
    }

    fn line_byte(&mut self, limit: usize) -> Result<(), Malformed> {
        self.seen += 1;
        if self.seen > limit {
            return Err(Malformed);
        }
        Ok(())
    }
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::any;

    use super::*;

    fn end_of(body: &[u8]) -> Result<Option<usize>, Malformed> {
        Scanner::default().scan(body)
    }

    #[test]
    fn finds_the_end_of_well_formed_bodies() {
        assert_eq!(end_of(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(end_of(b"5\r\nhello\r\n0\r\n\r\nNEXT"), Ok(Some(15)));
        assert_eq!(
            end_of(b"A;ext=1\r\n0123456789\r\n0\r\ngrpc-status: 0\r\n\r\n"),
            Ok(Some(42))
        );
        // Bare line feeds are tolerated, as most servers and clients do.
        assert_eq!(end_of(b"3\nabc\n0\n\n"), Ok(Some(9)));
        assert_eq!(end_of(b"5\r\nhel"), Ok(None));
        assert_eq!(end_of(b"0\r\nx-trailer: 1\r\n"), Ok(None));
    }

    #[test]
    fn rejects_malformed_bodies() {
        for body in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
            b"5\rx",
            b"0\r\n\rx",
        ] {
            assert_eq!(end_of(body), Err(Malformed), "{body:?}");
        }
        let mut long = b"1;".to_vec();
        long.resize(MAX_SIZE_LINE + 1, b'a');
        assert_eq!(end_of(&long), Err(Malformed));
    }

    proptest::proptest! {
        /// A body built from arbitrary chunks and trailers ends where it was built to end,
        /// however it is cut into pieces, and bytes after it are not claimed.
        #[test]
        fn pieces_agree_with_the_whole(
            chunks in vec(vec(any::<u8>(), 1..300), 0..6),
            trailers in vec("[a-z]{1,8}: [a-z0-9]{0,8}", 0..3),
            cuts in vec(1usize..50, 1..10),
            tail in vec(any::<u8>(), 0..20),
        ) {
            let mut body = Vec::new();
            for chunk in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for t in &trailers {
                body.extend_from_slice(t.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(&tail);

            let mut scanner = Scanner::default();
            let mut at = 0;
            let mut found = None;
            for cut in cuts.iter().cycle() {
                let to = (at + cut).min(body.len());
                if let Some(n) = scanner.scan(&body[at..to]).unwrap() {
                    found = Some(at + n);
                    break;
                }
                at = to;
                if at == body.len() {
                    break;
                }
            }
            proptest::prop_assert_eq!(found, Some(end));
        }

        /// Arbitrary bytes never panic the scanner.
        #[test]
        fn garbage_is_an_error_or_more_input(bytes in vec(any::<u8>(), 0..200)) {
            let _ = Scanner::default().scan(&bytes);
        }
    }
}
