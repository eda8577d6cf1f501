//! MQTT topic filters, parsed once: the local broker routes by them and the policy
//! decides by their structure (levels, `+` and `#` positions, the `$share/{group}/`
//! prefix), not by their spelling.
//!
//! A filter is `$share/{group}/{filter}` (a shared subscription: the group is one
//! non-empty level without `+` or `#`) or `{filter}`: levels separated by `/`, where `+`
//! stands alone in a level and `#` alone in the last level (MQTT 3.1.1 4.7, MQTT 5 4.7
//! and 4.8.2). Anything else is no filter and is refused.

/// The prefix of a shared subscription.
pub const SHARE_PREFIX: &str = "$share/";

/// A valid topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicFilter<'a> {
    raw: &'a str,
    group: Option<&'a str>,
    filter: &'a str,
}

/// Why a string is no topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("a topic filter must not be empty")]
    Empty,
    #[error("a topic filter must not hold the null character")]
    Null,
    #[error("'#' must be alone in the last level of a topic filter")]
    MultiLevel,
    #[error("'+' must be alone in its level of a topic filter")]
    SingleLevel,
    #[error(
        "a shared subscription is $share/<group>/<filter>, the group one level without '+' or '#'"
    )]
    Shared,
}

impl<'a> TopicFilter<'a> {
    pub fn parse(raw: &'a str) -> Result<Self, FilterError> {
        if raw.contains('\0') {
            return Err(FilterError::Null);
        }
        let (group, filter) = match raw.strip_prefix(SHARE_PREFIX) {
            Some(shared) => {
                let (group, filter) = shared.split_once('/').ok_or(FilterError::Shared)?;
                if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
                    return Err(FilterError::Shared);
                }
                (Some(group), filter)
            }
            None => (None, raw),
        };
        if filter.is_empty() {
            return Err(FilterError::Empty);
        }
        let count = filter.split('/').count();
        for (i, level) in filter.split('/').enumerate() {
            if level.contains('#') && (level != "#" || i + 1 != count) {
                return Err(FilterError::MultiLevel);
            }
            if level.contains('+') && level != "+" {
                return Err(FilterError::SingleLevel);
            }
        }
        Ok(Self { raw, group, filter })
    }

    /// The filter as subscribed (with `$share/{group}/` for a shared one).
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The group of a shared subscription.
    pub fn group(&self) -> Option<&'a str> {
        self.group
    }

    /// The filter without its `$share/{group}/` prefix: what topics are matched against.
    pub fn filter(&self) -> &'a str {
        self.filter
    }

    /// The levels of [`Self::filter`].
    pub fn levels(&self) -> std::str::Split<'a, char> {
        self.filter.split('/')
    }

    /// Whether a topic is matched (`+` one level, `#` this level and all below).
    pub fn matches(&self, topic: &str) -> bool {
        levels_match(self.filter, topic)
    }

    /// The application whose events the filter is, exactly: `app/{app}` (shared or not),
    /// with no wildcard.
    pub fn application(&self) -> Option<&'a str> {
        self.filter
            .strip_prefix("app/")
            .filter(|app| !app.is_empty() && !app.contains(['/', '+', '#']))
    }
}

impl std::fmt::Display for TopicFilter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.raw)
    }
}

/// Whether a filter without a `$share/` prefix (as [`TopicFilter::filter`] gives it)
/// matches a topic. Topics starting with `$` are not matched by a first-level wildcard.
pub fn levels_match(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if topic_levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_parsed_once() {
        let shared = TopicFilter::parse("$share/g/app/app1").unwrap();
        assert_eq!(shared.group(), Some("g"));
        assert_eq!(shared.filter(), "app/app1");
        assert_eq!(shared.application(), Some("app1"));
        assert_eq!(shared.to_string(), "$share/g/app/app1");
        let deep = TopicFilter::parse("$share/g/dt/app2/dev1/app/app1").unwrap();
        assert_eq!(deep.group(), Some("g"));
        assert_eq!(deep.levels().count(), 5);
        assert_eq!(deep.application(), None);
        let plain = TopicFilter::parse("cmd/app1/dev1/#").unwrap();
        assert_eq!((plain.group(), plain.filter()), (None, "cmd/app1/dev1/#"));
        assert!(plain.matches("cmd/app1/dev1/reboot"));
        assert!(
            plain.matches("cmd/app1/dev1"),
            "# takes the parent level too"
        );
        assert_eq!(TopicFilter::parse("app/+").unwrap().application(), None);

        for (bad, error) in [
            ("", FilterError::Empty),
            ("a/#/b", FilterError::MultiLevel),
            ("a/b#", FilterError::MultiLevel),
            ("a/b+/c", FilterError::SingleLevel),
            ("$share/g", FilterError::Shared),
            ("$share//app/app1", FilterError::Shared),
            ("$share/g/", FilterError::Shared),
            ("$share/+/app/app1", FilterError::Shared),
            ("$share/#/app/app1", FilterError::Shared),
            ("$share/g#/app/app1", FilterError::Shared),
            ("a/\0", FilterError::Null),
        ] {
            assert_eq!(TopicFilter::parse(bad), Err(error), "{bad:?}");
        }
    }

    #[test]
    fn levels_match_as_in_mqtt() {
        assert!(levels_match("#", "a/b"));
        assert!(levels_match("+/b", "a/b"));
        assert!(!levels_match("+", "a/b"));
        assert!(levels_match("a/+", "a/"), "an empty level is a level");
        assert!(!levels_match("#", "$SYS/x"));
        assert!(!levels_match("+/x", "$SYS/x"));
        assert!(levels_match("$SYS/#", "$SYS/x"));
    }
}
