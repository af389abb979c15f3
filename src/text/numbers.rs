//! Numbers as words: cardinals, ordinals, years, decimals and digit strings.
//!
//! Algorithm. Cardinals split into groups of three digits from the right, each group read as
//! `<hundreds> hundred <tens-units>` and followed by its scale word (thousand, million, billion,
//! trillion); American style, no "and". Ordinals read the cardinal and replace its last word with its
//! ordinal form (*twenty one* → *twenty first*). Years 1100–1999 and 2010–2099 read as two pairs
//! (*nineteen ninety nine*, *twenty twenty four*), with *hundred* for a round century and *oh* for a
//! zero tens digit (*nineteen oh five*); 2000–2009 read as cardinals.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const SCALES: [&str; 5] = ["", "thousand", "million", "billion", "trillion"];

fn below_hundred(n: u64, out: &mut Vec<&'static str>) {
    if n < 20 {
        out.push(ONES[n as usize]);
    } else {
        out.push(TENS[(n / 10) as usize]);
        if !n.is_multiple_of(10) {
            out.push(ONES[(n % 10) as usize]);
        }
    }
}

fn below_thousand(n: u64, out: &mut Vec<&'static str>) {
    if n >= 100 {
        out.push(ONES[(n / 100) as usize]);
        out.push("hundred");
        if !n.is_multiple_of(100) {
            below_hundred(n % 100, out);
        }
    } else {
        below_hundred(n, out);
    }
}

/// A cardinal number in words; numbers of a quadrillion and above are read digit by digit.
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return "zero".into();
    }
    if n >= 1_000_000_000_000_000 {
        return digits(&n.to_string());
    }
    let mut groups = Vec::new();
    let mut m = n;
    while m > 0 {
        groups.push(m % 1000);
        m /= 1000;
    }
    let mut out = Vec::new();
    for (scale, &g) in groups.iter().enumerate().rev() {
        if g == 0 {
            continue;
        }
        below_thousand(g, &mut out);
        if scale > 0 {
            out.push(SCALES[scale]);
        }
    }
    out.join(" ")
}

/// An ordinal number in words (*1* → *first*, *23* → *twenty third*).
pub fn ordinal(n: u64) -> String {
    let c = cardinal(n);
    let (head, last) = match c.rsplit_once(' ') {
        Some((h, l)) => (Some(h), l),
        None => (None, c.as_str()),
    };
    let last_ord = match last {
        "one" => "first".to_string(),
        "two" => "second".into(),
        "three" => "third".into(),
        "five" => "fifth".into(),
        "eight" => "eighth".into(),
        "nine" => "ninth".into(),
        "twelve" => "twelfth".into(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    match head {
        Some(h) => format!("{h} {last_ord}"),
        None => last_ord,
    }
}

/// Whether a bare four-digit number reads as a year.
pub fn is_year(n: u64) -> bool {
    (1100..=2099).contains(&n)
}

/// A year in words (*1999* → *nineteen ninety nine*, *2005* → *two thousand five*).
pub fn year(n: u64) -> String {
    if !is_year(n) || (2000..=2009).contains(&n) {
        return cardinal(n);
    }
    let (hi, lo) = (n / 100, n % 100);
    let mut out = Vec::new();
    below_hundred(hi, &mut out);
    if lo == 0 {
        out.push("hundred");
    } else if lo < 10 {
        out.push("oh");
        out.push(ONES[lo as usize]);
    } else {
        below_hundred(lo, &mut out);
    }
    out.join(" ")
}

/// Each digit as a word (*0042* → *zero zero four two*); non-digits are skipped.
pub fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| ONES[d as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The months' English names, January first (dates read aloud, `strftime`'s `%B`).
pub const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(7), "seven");
        assert_eq!(cardinal(15), "fifteen");
        assert_eq!(cardinal(40), "forty");
        assert_eq!(cardinal(99), "ninety nine");
        assert_eq!(cardinal(100), "one hundred");
        assert_eq!(cardinal(2500), "two thousand five hundred");
        assert_eq!(cardinal(1_000_001), "one million one");
        assert_eq!(
            cardinal(123_456_789),
            "one hundred twenty three million four hundred fifty six thousand seven hundred eighty nine"
        );
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "first");
        assert_eq!(ordinal(2), "second");
        assert_eq!(ordinal(3), "third");
        assert_eq!(ordinal(4), "fourth");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(ordinal(20), "twentieth");
        assert_eq!(ordinal(21), "twenty first");
        assert_eq!(ordinal(100), "one hundredth");
    }

    #[test]
    fn years() {
        assert_eq!(year(1999), "nineteen ninety nine");
        assert_eq!(year(1900), "nineteen hundred");
        assert_eq!(year(1905), "nineteen oh five");
        assert_eq!(year(2000), "two thousand");
        assert_eq!(year(2007), "two thousand seven");
        assert_eq!(year(2024), "twenty twenty four");
        assert_eq!(year(3000), "three thousand");
    }

    #[test]
    fn digit_strings() {
        assert_eq!(digits("0042"), "zero zero four two");
    }
}
