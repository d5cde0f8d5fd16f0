//! A minimal DNS/mDNS wire format: enough to ask "who offers
//! `_http._tcp.local`?" and read PTR, SRV, TXT, A and AAAA answers.
//! Pure functions over bytes; every malformed input is an error, never a
//! panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};

pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const CLASS_IN: u16 = 1;
/// In mDNS, the top bit of a question's class asks for a unicast reply
/// (QU); in a record's class it is the cache-flush bit.
pub const CLASS_TOP_BIT: u16 = 0x8000;
const FLAG_RESPONSE: u16 = 0x8000;
const HEADER_LEN: usize = 12;
const MAX_NAME_LEN: usize = 255;
/// Bounds compression-pointer chasing; real packets need a handful.
const MAX_POINTER_HOPS: usize = 64;

/// One parsed resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    /// The class without the cache-flush bit.
    pub class: u16,
    pub cache_flush: bool,
    pub ttl: u32,
    pub data: RData,
}

/// Record data for the types we understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Txt(Vec<String>),
    Other(Vec<u8>),
}

/// A parsed message: questions are reduced to (name, type); the answer,
/// authority and additional sections are concatenated in `records`,
/// because mDNS responders put useful records in all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub is_response: bool,
    pub questions: Vec<(String, u16)>,
    pub records: Vec<Record>,
}

fn encode_name(out: &mut Vec<u8>, name: &str) -> Result<()> {
    let bad = |offset, reason| Err(Error::Dns { offset, reason });
    let name = name.strip_suffix('.').unwrap_or(name);
    let start = out.len();
    for label in name.split('.') {
        if label.is_empty() {
            return bad(out.len(), "empty label in name");
        }
        let Some(len) = u8::try_from(label.len()).ok().filter(|l| *l <= 63) else {
            return bad(out.len(), "label longer than 63 bytes");
        };
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() - start > MAX_NAME_LEN {
        return bad(start, "name longer than 255 bytes");
    }
    Ok(())
}

/// A query with one question. For mDNS use id 0 and `unicast_reply =
/// false` (a QM question): responders then answer by multicast, which is
/// what proves multicast flows in both directions.
pub fn build_query(id: u16, name: &str, qtype: u16, unicast_reply: bool) -> Result<Vec<u8>> {
    let mut p = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // flags: standard query
    p.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    p.extend_from_slice(&[0; 6]); // AN, NS, AR
    encode_name(&mut p, name)?;
    p.extend_from_slice(&qtype.to_be_bytes());
    let class = if unicast_reply {
        CLASS_IN | CLASS_TOP_BIT
    } else {
        CLASS_IN
    };
    p.extend_from_slice(&class.to_be_bytes());
    Ok(p)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err<T>(&self, reason: &'static str) -> Result<T> {
        Err(Error::Dns {
            offset: self.pos,
            reason,
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self.buf.get(self.pos..self.pos.saturating_add(n)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => self.err("truncated"),
        }
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a possibly compressed name. Pointers must point strictly
    /// backwards, which rules out loops; hops are bounded anyway.
    fn name(&mut self) -> Result<String> {
        let mut labels: Vec<String> = Vec::new();
        let mut total = 0usize;
        let mut cursor = self.pos;
        let mut resume: Option<usize> = None;
        let mut hops = 0;
        loop {
            let Some(&len) = self.buf.get(cursor) else {
                return Err(Error::Dns {
                    offset: cursor,
                    reason: "truncated name",
                });
            };
            match len & 0xC0 {
                0x00 if len == 0 => {
                    cursor += 1;
                    break;
                }
                0x00 => {
                    let start = cursor + 1;
                    let end = start + usize::from(len);
                    let Some(bytes) = self.buf.get(start..end) else {
                        return Err(Error::Dns {
                            offset: cursor,
                            reason: "truncated label",
                        });
                    };
                    total += bytes.len() + 1;
                    if total > MAX_NAME_LEN {
                        return Err(Error::Dns {
                            offset: cursor,
                            reason: "name longer than 255 bytes",
                        });
                    }
                    // Presentation form: a '.' or '\' inside a label (legal
                    // in DNS-SD instance names) is escaped.
                    let text = String::from_utf8_lossy(bytes)
                        .replace('\\', "\\\\")
                        .replace('.', "\\.");
                    labels.push(text);
                    cursor = end;
                }
                0xC0 => {
                    let Some(&lo) = self.buf.get(cursor + 1) else {
                        return Err(Error::Dns {
                            offset: cursor,
                            reason: "truncated pointer",
                        });
                    };
                    let target = usize::from(u16::from_be_bytes([len & 0x3F, lo]));
                    if target >= cursor {
                        return Err(Error::Dns {
                            offset: cursor,
                            reason: "forward compression pointer",
                        });
                    }
                    hops += 1;
                    if hops > MAX_POINTER_HOPS {
                        return Err(Error::Dns {
                            offset: cursor,
                            reason: "too many compression pointers",
                        });
                    }
                    resume.get_or_insert(cursor + 2);
                    cursor = target;
                }
                _ => {
                    return Err(Error::Dns {
                        offset: cursor,
                        reason: "reserved label type",
                    })
                }
            }
        }
        self.pos = resume.unwrap_or(cursor);
        Ok(labels.join("."))
    }

    fn rdata(&mut self, rtype: u16, len: usize) -> Result<RData> {
        let end = self.pos + len;
        if end > self.buf.len() {
            return self.err("truncated record data");
        }
        let data = match rtype {
            TYPE_A if len == 4 => {
                let b = self.take(4)?;
                RData::A(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            TYPE_AAAA if len == 16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                RData::Aaaa(Ipv6Addr::from(a))
            }
            TYPE_PTR => RData::Ptr(self.name()?),
            TYPE_SRV => RData::Srv {
                priority: self.u16()?,
                weight: self.u16()?,
                port: self.u16()?,
                target: self.name()?,
            },
            TYPE_TXT => {
                let mut strings = Vec::new();
                while self.pos < end {
                    let n = usize::from(self.u8()?);
                    strings.push(String::from_utf8_lossy(self.take(n)?).into_owned());
                }
                RData::Txt(strings)
            }
            _ => RData::Other(self.take(len)?.to_vec()),
        };
        if self.pos != end {
            return self.err("record data length mismatch");
        }
        Ok(data)
    }
}

/// Parses a DNS message.
pub fn parse(buf: &[u8]) -> Result<Message> {
    let mut r = Reader { buf, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let qd = r.u16()?;
    let counts = [r.u16()?, r.u16()?, r.u16()?];
    let mut questions = Vec::new();
    for _ in 0..qd {
        let name = r.name()?;
        let qtype = r.u16()?;
        let _class = r.u16()?;
        questions.push((name, qtype));
    }
    let mut records = Vec::new();
    for _ in 0..counts.iter().map(|c| usize::from(*c)).sum::<usize>() {
        let name = r.name()?;
        let rtype = r.u16()?;
        let class = r.u16()?;
        let ttl = r.u32()?;
        let len = usize::from(r.u16()?);
        let data = r.rdata(rtype, len)?;
        records.push(Record {
            name,
            rtype,
            class: class & !CLASS_TOP_BIT,
            cache_flush: class & CLASS_TOP_BIT != 0,
            ttl,
            data,
        });
    }
    Ok(Message {
        id,
        is_response: flags & FLAG_RESPONSE != 0,
        questions,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QM PTR query for _http._tcp.local, byte for byte.
    const QUERY: [u8; 34] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x05, b'_', b'h', b't', b't', b'p', 0x04, b'_', b't', b'c', b'p', //
        0x05, b'l', b'o', b'c', b'a', b'l', 0x00, 0x00, 0x0c, 0x00, 0x01,
    ];

    /// An avahi-style answer: PTR in the answer section; SRV, TXT and A as
    /// additional records, all name-compressed, with cache-flush bits.
    const RESPONSE: [u8; 116] = [
        // header: id 0, flags 0x8400 (response, authoritative), 0/1/0/3
        0x00, 0x00, 0x84, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03,
        // 12: _http._tcp.local ("local" at 23)
        0x05, b'_', b'h', b't', b't', b'p', 0x04, b'_', b't', b'c', b'p', //
        0x05, b'l', b'o', b'c', b'a', b'l', 0x00, // 30: PTR IN ttl 4500 rdlen 10
        0x00, 0x0c, 0x00, 0x01, 0x00, 0x00, 0x11, 0x94, 0x00, 0x0a,
        // 40: "Speaker" + ptr 12
        0x07, b'S', b'p', b'e', b'a', b'k', b'e', b'r', 0xc0, 0x0c,
        // 50: SRV for ptr 40, cache-flush, ttl 120, rdlen 12
        0xc0, 0x28, 0x00, 0x21, 0x80, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x0c,
        // 62: prio 0, weight 0, port 8080, target "dev" (at 68) + ptr 23
        0x00, 0x00, 0x00, 0x00, 0x1f, 0x90, 0x03, b'd', b'e', b'v', 0xc0, 0x17,
        // 74: TXT for ptr 40, rdlen 14
        0xc0, 0x28, 0x00, 0x10, 0x80, 0x01, 0x00, 0x00, 0x11, 0x94, 0x00, 0x0e,
        // 86: "model=speaker"
        0x0d, b'm', b'o', b'd', b'e', b'l', b'=', b's', b'p', b'e', b'a', b'k', b'e', b'r',
        // 100: A for ptr 68 (dev.local) = 192.168.2.50
        0xc0, 0x44, 0x00, 0x01, 0x80, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x04, //
        0xc0, 0xa8, 0x02, 0x32,
    ];

    #[test]
    fn query_matches_golden_bytes() {
        let q = build_query(0, "_http._tcp.local", TYPE_PTR, false).expect("valid name");
        assert_eq!(q, QUERY);
        let qu = build_query(0, "_http._tcp.local.", TYPE_PTR, true).expect("valid name");
        assert_eq!(&qu[..32], &QUERY[..32]);
        assert_eq!(&qu[32..], &[0x80, 0x01]);
    }

    #[test]
    fn query_parses_back() {
        let m = parse(&QUERY).expect("parses");
        assert!(!m.is_response);
        assert_eq!(m.questions, vec![("_http._tcp.local".to_owned(), TYPE_PTR)]);
        assert!(m.records.is_empty());
    }

    #[test]
    fn response_parses_with_compression() {
        let m = parse(&RESPONSE).expect("parses");
        assert!(m.is_response);
        let data: Vec<(&str, &RData)> = m
            .records
            .iter()
            .map(|r| (r.name.as_str(), &r.data))
            .collect();
        assert_eq!(
            data,
            vec![
                (
                    "_http._tcp.local",
                    &RData::Ptr("Speaker._http._tcp.local".into())
                ),
                (
                    "Speaker._http._tcp.local",
                    &RData::Srv {
                        priority: 0,
                        weight: 0,
                        port: 8080,
                        target: "dev.local".into()
                    }
                ),
                (
                    "Speaker._http._tcp.local",
                    &RData::Txt(vec!["model=speaker".into()])
                ),
                ("dev.local", &RData::A(Ipv4Addr::new(192, 168, 2, 50))),
            ]
        );
        assert!(!m.records[0].cache_flush);
        assert!(m.records[1].cache_flush);
        assert_eq!(m.records[1].class, CLASS_IN);
        assert_eq!(m.records[0].ttl, 4500);
    }

    #[test]
    fn dots_inside_labels_are_escaped() {
        let mut p = RESPONSE;
        p[45] = b'.'; // "Spea.er"
        let m = parse(&p).expect("parses");
        assert_eq!(
            m.records[0].data,
            RData::Ptr("Spea\\.er._http._tcp.local".into())
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        for n in 0..RESPONSE.len() {
            assert!(parse(&RESPONSE[..n]).is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn pointer_loops_are_rejected() {
        let mut p = QUERY.to_vec();
        p.truncate(12);
        p.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x0c, 0x00, 0x01]); // points at itself
        assert!(parse(&p).is_err());
    }

    #[test]
    fn bad_names_cannot_be_encoded() {
        assert!(build_query(0, "a..b", TYPE_A, false).is_err());
        assert!(build_query(0, &"x".repeat(64), TYPE_A, false).is_err());
        let long = vec!["abcdefghij"; 30].join(".");
        assert!(build_query(0, &long, TYPE_A, false).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        // A tiny deterministic LCG; the point is coverage of odd inputs.
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        };
        for len in 0..300 {
            let mut buf: Vec<u8> = (0..len).map(|_| next()).collect();
            let _ = parse(&buf);
            // Mutations of a valid packet reach deeper code paths.
            let mut p = RESPONSE.to_vec();
            let i = usize::from(next()) % p.len();
            p[i] = next();
            let _ = parse(&p);
            buf.clear();
        }
    }
}
