//! How a version's body is kept: on SQLite as its JSON text; on PostgreSQL compressed
//! (zstd, with a dictionary of the text FHIR R4 resources have in common, `bodies.dict`).
//!
//! Why only PostgreSQL: it compresses a value only in a row wider than about 2 kB, and a body
//! is about 600 bytes, so it kept every body whole (a body was three quarters of a version's
//! row, and the store 3.7 times the JSON it was sent). Compressed with the dictionary a body
//! keeps about a fifth of its bytes. SQLite stores about 2.2 times the JSON without it, and
//! its ingest and searches run in the adapter's own threads, where every microsecond counts.
//!
//! The column is `bytea` on PostgreSQL: a compressed body is a zstd frame, which starts with
//! zstd's magic number; anything else is the JSON's UTF-8 itself (what migration 0020 made of
//! the bodies written before it, and an empty body: a deletion). So both kinds are read.
//!
//! The dictionary is part of the stored format: a body compressed with it can be read only
//! with it. Do not change `bodies.dict`; a better one would be a second file, chosen by the
//! dictionary id the frame carries.

use std::cell::RefCell;
use std::sync::LazyLock;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// The dictionary: trained from FHIR R4 resources written by others (see the ignored test
/// `the_dictionary_is_made_from_the_corpora`).
static DICTIONARY: &[u8] = include_bytes!("bodies.dict");

/// zstd's level: about 2 µs a body; higher levels gain a few percent for four times the time.
const LEVEL: i32 = 3;

/// The first bytes of a zstd frame.
const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The largest body read back (a frame that claims more is refused, not allocated).
const MOST: usize = 256 * 1024 * 1024;

static ENCODER: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(DICTIONARY, LEVEL));
static DECODER: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(DICTIONARY));

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// A body that could not be compressed or read back.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("cannot compress a body: {0}")]
    Compress(std::io::Error),
    #[error("a stored body does not decompress: {0}")]
    Decompress(std::io::Error),
    #[error("a stored body is not UTF-8")]
    NotText,
}

/// A body as PostgreSQL stores it: compressed, or empty for a deletion.
pub fn pack(body: &str) -> Result<Vec<u8>, BodyError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let compressor = match c.as_mut() {
            Some(compressor) => compressor,
            None => c.insert(
                Compressor::with_prepared_dictionary(&ENCODER).map_err(BodyError::Compress)?,
            ),
        };
        compressor
            .compress(body.as_bytes())
            .map_err(BodyError::Compress)
    })
}

/// A body as PostgreSQL stored it, as JSON text.
pub fn unpack(stored: &[u8]) -> Result<String, BodyError> {
    if !stored.starts_with(&MAGIC) {
        return String::from_utf8(stored.to_vec()).map_err(|_| BodyError::NotText);
    }
    let bytes = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let decompressor = match d.as_mut() {
            Some(decompressor) => decompressor,
            None => d.insert(
                Decompressor::with_prepared_dictionary(&DECODER).map_err(BodyError::Decompress)?,
            ),
        };
        decompressor
            .decompress(stored, MOST)
            .map_err(BodyError::Decompress)
    })?;
    String::from_utf8(bytes).map_err(|_| BodyError::NotText)
}

/// A `versions.body` read from PostgreSQL (`#[sqlx(try_from = "Packed")]` on a `String`).
pub struct Packed(pub String);

impl sqlx::Type<sqlx::Postgres> for Packed {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Vec<u8> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Packed {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let bytes = <&[u8] as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(Packed(unpack(bytes)?))
    }
}

impl From<Packed> for String {
    fn from(p: Packed) -> Self {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBSERVATION: &str = r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-01-04T08:45:00+01:00","valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}"#;

    #[test]
    fn a_body_comes_back_as_it_was_sent() {
        for body in [OBSERVATION, "", "{}", "{\"a\":\"é 🩺\"}"] {
            assert_eq!(unpack(&pack(body).unwrap()).unwrap(), body);
        }
        let packed = pack(OBSERVATION).unwrap();
        assert!(packed.starts_with(&MAGIC));
        assert!(
            packed.len() * 3 < OBSERVATION.len(),
            "{} of {} bytes",
            packed.len(),
            OBSERVATION.len()
        );
    }

    #[test]
    fn a_body_written_before_compression_is_read_as_it_is() {
        assert_eq!(unpack(OBSERVATION.as_bytes()).unwrap(), OBSERVATION);
        assert_eq!(unpack(b"").unwrap(), "");
    }

    #[test]
    fn a_damaged_body_is_an_error_not_a_panic() {
        let packed = pack(OBSERVATION).unwrap();
        for cut in [4, 8, packed.len() / 2, packed.len() - 1] {
            assert!(unpack(&packed[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = packed.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0xff;
        // A flipped byte may still decompress (no checksum), but never to the body, and
        // never with a panic.
        if let Ok(text) = unpack(&flipped) {
            assert_ne!(text, OBSERVATION);
        }
        assert!(unpack(&[0xff, 0xfe, 0x00]).is_err());
        // A frame that claims a size larger than any body is refused before allocating it.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[0xc0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
        assert!(unpack(&huge).is_err());
    }

    /// Every resource of the corpora written by others comes back as it was, and the store
    /// keeps a fraction of its bytes (skipped without `../shared/corpora`).
    #[test]
    fn the_corpora_come_back_whole_and_smaller() {
        let Some(resources) = corpora::resources() else {
            eprintln!("skipped: ../shared/corpora is not there");
            return;
        };
        let (mut raw, mut packed) = (0usize, 0usize);
        for (i, r) in resources.iter().enumerate() {
            let p = pack(r).unwrap();
            assert_eq!(&unpack(&p).unwrap(), r);
            // The dictionary was made from the even ones: the odd ones are unseen.
            if i % 2 == 1 {
                raw += r.len();
                packed += p.len();
            }
        }
        let ratio = packed as f64 / raw as f64;
        eprintln!(
            "{} resources; those unseen: {raw} bytes, packed {packed} ({ratio:.3})",
            resources.len()
        );
        assert!(ratio < 0.3, "packed to {ratio:.3} of the JSON");
    }

    /// Writes `bodies.dict` again from the corpora. Run only to study a new dictionary: the
    /// stored format depends on the one committed (see the module's doc).
    #[test]
    #[ignore]
    fn the_dictionary_is_made_from_the_corpora() {
        let resources = corpora::resources().expect("../shared/corpora");
        // Every other resource: the rest is what the test above reads as unseen.
        let samples: Vec<&String> = resources.iter().step_by(2).collect();
        let dictionary = zstd::dict::from_samples(&samples, 64 * 1024).unwrap();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("adapter/store/bodies.dict.new");
        std::fs::write(&path, dictionary).unwrap();
        eprintln!("written: {}", path.display());
    }

    mod corpora {
        use std::path::{Path, PathBuf};

        fn files(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    files(&p, out);
                } else if p.extension().is_some_and(|x| x == "json") {
                    out.push(p);
                }
            }
        }

        /// The resources of HL7's R4 examples, the Synthea patients and the Nictiz zib
        /// examples, compact as a source's JSON is stored, taken in turn from each corpus.
        pub fn resources() -> Option<Vec<String>> {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora");
            if !root.exists() {
                return None;
            }
            let mut per_corpus = Vec::new();
            for corpus in ["hl7-r4-examples", "synthea-r4", "nictiz-zib2020"] {
                let mut paths = Vec::new();
                files(&root.join(corpus), &mut paths);
                paths.sort();
                let mut found = Vec::new();
                for p in paths {
                    let Ok(text) = std::fs::read(&p) else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&text) else {
                        continue;
                    };
                    if value["resourceType"] == "Bundle" {
                        for e in value["entry"].as_array().into_iter().flatten() {
                            if e["resource"].is_object() {
                                found.push(e["resource"].to_string());
                            }
                        }
                    } else if value["resourceType"].is_string() {
                        found.push(value.to_string());
                    }
                }
                per_corpus.push(found);
            }
            // Taken in turn, at most 12,000 of each, so that no corpus outweighs the others.
            let mut out = Vec::new();
            for i in 0..12_000 {
                for c in &per_corpus {
                    if let Some(r) = c.get(i) {
                        out.push(r.clone());
                    }
                }
            }
            Some(out)
        }
    }
}
