//! The rating codes typed in the Rate view: parsing a pending code into a rating.
//! (The protocol module will own these rules; this parser keeps them in one place.)

use crate::store::ratings::NewRating;

/// A valid rating code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParsedCode {
    pub reject: bool,
    pub gado: bool,
    pub motion: u8,
    pub contrast: u8,
    pub noise: u8,
}

impl ParsedCode {
    /// The plain rating fields this code stands for.
    pub fn apply_to(&self, rating: &mut NewRating) {
        rating.usable = !self.reject;
        rating.gado = self.gado;
        rating.motion = self.motion;
        rating.contrast = self.contrast;
        rating.noise = self.noise;
    }
}

/// Parses a notebook code: `r` reject, `k` gadolinium, `a`/`aa` motion, `z`/`zz`
/// contrast, `d`/`dd` noise, in any order. An empty code is a usable image of good
/// quality. A rejected image gets no grades, so `r` stands alone.
pub fn parse_code(code: &str) -> Result<ParsedCode, String> {
    let mut counts = [0u8; 5];
    for c in code.chars() {
        let slot = match c {
            'r' => 0,
            'k' => 1,
            'a' => 2,
            'z' => 3,
            'd' => 4,
            other => return Err(format!("'{other}' is not a rating key (r k a z d)")),
        };
        counts[slot] = counts[slot].saturating_add(1);
    }
    let [reject, gado, motion, contrast, noise] = counts;
    if reject > 1 {
        return Err("'r' may be typed once".into());
    }
    if gado > 1 {
        return Err("'k' may be typed once".into());
    }
    for (count, key, what) in [
        (motion, 'a', "motion"),
        (contrast, 'z', "contrast"),
        (noise, 'd', "noise"),
    ] {
        if count > 2 {
            return Err(format!(
                "'{key}' at most twice ({what}: {key} moderate, {key}{key} severe)"
            ));
        }
    }
    if reject == 1 && code.len() > 1 {
        return Err("a rejected image gets no other key: 'r' stands alone".into());
    }
    Ok(ParsedCode {
        reject: reject == 1,
        gado: gado == 1,
        motion,
        contrast,
        noise,
    })
}

/// Words for a code, shown next to the pending code.
pub fn describe(code: &ParsedCode) -> String {
    if code.reject {
        return "reject".into();
    }
    let grade = |g: u8| match g {
        0 => "none",
        1 => "moderate",
        _ => "severe",
    };
    let tier = match code.motion.max(code.contrast).max(code.noise) {
        0 => "good",
        1 => "medium",
        _ => "bad",
    };
    format!(
        "{tier}: motion {}, contrast {}, noise {}{}",
        grade(code.motion),
        grade(code.contrast),
        grade(code.noise),
        if code.gado { ", gadolinium" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes() {
        assert_eq!(parse_code(""), Ok(ParsedCode::default()));
        let c = parse_code("kaaz").expect("valid");
        assert_eq!((c.gado, c.motion, c.contrast, c.noise), (true, 2, 1, 0));
        assert_eq!(parse_code("dd").expect("valid").noise, 2);
        assert_eq!(parse_code("zaz"), parse_code("azz"));
        assert!(parse_code("r").expect("valid").reject);
    }

    #[test]
    fn invalid_codes_say_why() {
        for bad in ["aaa", "rr", "kk", "ra", "kr", "rd", "x", "zzz", "R"] {
            let err = parse_code(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(parse_code("ra").unwrap_err().contains("stands alone"));
        assert!(parse_code("aaa").unwrap_err().contains("at most twice"));
    }

    #[test]
    fn describes_tiers() {
        assert_eq!(
            describe(&parse_code("az").expect("valid")),
            "medium: motion moderate, contrast moderate, noise none"
        );
        assert_eq!(describe(&parse_code("r").expect("valid")), "reject");
    }
}
