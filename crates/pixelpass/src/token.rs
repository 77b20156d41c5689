//! Stream tokens: unguessable (128 bits from the OS), URL-safe, compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A fresh 128-bit token, 22 URL-safe characters.
pub fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read the OS random source for a token: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A token given by the user must be usable in a URL path segment.
pub fn validate(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.' || *c == '~'))
    {
        return Err(format!(
            "the token has the character {c:?}; use letters, digits, '-', '_', '.', '~'"
        ));
    }
    Ok(())
}

/// Constant-time equality (the length is not secret).
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_distinct_and_url_safe() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        validate(&a).unwrap();
    }

    #[test]
    fn matching() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
        assert!(validate("a/b").is_err());
        assert!(validate("").is_err());
    }
}
