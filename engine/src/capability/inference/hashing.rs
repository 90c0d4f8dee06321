//! The built-in embedder: feature hashing of words and character trigrams.
//!
//! It needs no model and no network, so retrieval works on a fresh machine,
//! and it is deterministic: the same text gives the same vector on every
//! machine and in every release that keeps [`MODEL`]'s name (a change to the
//! method gets a new name, so stored vectors are never compared across
//! methods). Texts that share words and spellings come out close; it knows
//! nothing of meaning (synonyms, other languages).
//!
//! Method: the text is lowercased and split into words (runs of letters and
//! digits). Each word, and each character trigram of the word padded with a
//! space on either side, is hashed (64-bit FNV-1a, the feature's kind
//! prefixed so a word and a trigram never share a hash) to one of
//! [`DIMENSIONS`] buckets and a sign (the hashing trick: signs keep
//! collisions from only ever adding up). Words weigh 1, trigrams 0.5. The
//! vector is then scaled to unit length (all zero for a text without words),
//! so a dot product is the cosine similarity.

/// The name the embedder answers with.
pub const MODEL: &str = "assay-hashing-v1-512";

/// The vectors' dimension.
pub const DIMENSIONS: usize = 512;

const WORD_WEIGHT: f32 = 1.0;
const TRIGRAM_WEIGHT: f32 = 0.5;

/// The embedding of `text`.
pub fn embed(text: &str) -> Vec<f32> {
    let mut vector = vec![0f32; DIMENSIONS];
    let lower = text.to_lowercase();
    for word in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        add(&mut vector, b'w', word.as_bytes(), WORD_WEIGHT);
        let padded: Vec<char> = std::iter::once(' ')
            .chain(word.chars())
            .chain(std::iter::once(' '))
            .collect();
        let mut gram = String::new();
        for window in padded.windows(3) {
            gram.clear();
            gram.extend(window);
            add(&mut vector, b't', gram.as_bytes(), TRIGRAM_WEIGHT);
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut vector {
            *x /= norm;
        }
    }
    vector
}

fn add(vector: &mut [f32], kind: u8, feature: &[u8], weight: f32) {
    let hash = fnv1a(kind, feature);
    // Low bits pick the bucket, the top bit the sign.
    let bucket = (hash % DIMENSIONS as u64) as usize;
    let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
    vector[bucket] += sign * weight;
}

fn fnv1a(kind: u8, bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for &b in std::iter::once(&kind).chain(bytes) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let boiler = embed("The boiler in the basement of the hotel leaks and needs a service.");
        let boilers = embed("Hotel basement boilers leaking; service needed.");
        let menu = embed("Our restaurant menu changes every season with local produce.");
        // 0.45 and 0.05 (the same method written out in Python agrees).
        assert!(
            cosine(&boiler, &boilers) > 0.35,
            "{}",
            cosine(&boiler, &boilers)
        );
        assert!(cosine(&boiler, &menu) < 0.15, "{}", cosine(&boiler, &menu));
        assert!((cosine(&boiler, &boiler) - 1.0).abs() < 1e-5, "unit length");
    }

    #[test]
    fn it_is_deterministic_and_total() {
        assert_eq!(embed("Same text"), embed("same TEXT"));
        assert_eq!(embed("").len(), DIMENSIONS);
        assert!(embed("  ...  ").iter().all(|x| *x == 0.0));
        // Pinned values: a change to the method must change MODEL's name.
        let v = embed("assay");
        let nonzero: Vec<usize> = (0..DIMENSIONS).filter(|&i| v[i] != 0.0).collect();
        assert_eq!(
            nonzero.len(),
            6,
            "one word and five trigrams, no collisions"
        );
        // FNV-1a of b"wassay", as an independent implementation computes it.
        assert_eq!(
            fnv1a(b'w', b"assay"),
            4_042_939_627_470_001_437,
            "pinned hash"
        );
    }
}
