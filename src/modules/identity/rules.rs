//! The account rules that need no database: address and name shapes, the level curve.

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_DISPLAY_NAME_LEN: usize = 50;
pub const MAX_BIO_LEN: usize = 500;

/// Level `n` needs `50·n·(n−1)` experience: level 2 at 100, 3 at 300, 4 at 600, 5 at 1,000…
/// each level costs 100 more than the one before.
pub fn level_for_experience(experience: i64) -> u32 {
    let mut level = 1u32;
    while next_level_at(level) <= experience {
        level += 1;
    }
    level
}

/// The experience at which level `level + 1` starts.
pub fn next_level_at(level: u32) -> i64 {
    let n = i64::from(level) + 1;
    50 * n * (n - 1)
}

/// Trimmed and lower-cased; checked for shape.
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("is required");
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err("must be at most 254 characters");
    }
    match email.parse::<lettre::Address>() {
        Ok(address) if address.domain().contains('.') => Ok(email),
        _ => Err("is not a valid email address"),
    }
}

/// Trimmed, 1 to 50 characters, no control characters.
pub fn check_display_name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 {
        Err("is required")
    } else if len > MAX_DISPLAY_NAME_LEN {
        Err("must be at most 50 characters")
    } else if name.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else {
        Ok(name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_curve_grows_by_one_hundred_more_each_level() {
        assert_eq!(level_for_experience(0), 1);
        assert_eq!(level_for_experience(99), 1);
        assert_eq!(level_for_experience(100), 2);
        assert_eq!(level_for_experience(299), 2);
        assert_eq!(level_for_experience(300), 3);
        assert_eq!(level_for_experience(600), 4);
        assert_eq!(next_level_at(1), 100);
        assert_eq!(next_level_at(4), 1000);
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalize_email("  Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        assert!(normalize_email("not-an-email").is_err());
        assert!(normalize_email("a@b").is_err());
        assert!(normalize_email("").is_err());
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
