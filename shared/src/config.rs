//! How every function reads its configuration: a clap [`Parser`] per function whose
//! options each have a flag and an environment variable (`#[arg(long, env = "...")]`),
//! parsed once in `main` with [`parse`]. Settings several functions share are one small
//! [`Args`] struct each, flattened into the functions' configurations, so that each
//! variable's rule is written once: [`Table`], [`AdminRole`], [`OidcConfig`] (the issuer
//! and audience), [`Instance`], [`IotData`], the rate limits
//! ([`crate::rate_limit::PublishRate`], [`crate::rate_limit::CommandRate`]), the event
//! destination ([`crate::events::destination::Destination`]), and what every binary's
//! runtime reads ([`crate::runtime::Runtime`]: `PORT`, the internal token, TLS roots).
//!
//! One rule for every variable: a variable that is empty (or only whitespace) counts as
//! unset, so its default applies, or, for a required one, it is missing. Given as a flag,
//! an empty value is refused. Numbers, booleans and choices are checked by clap; an
//! error names the flag and the variable (the value name of each option is its variable).

use crate::access::authz::AccessControl;
use crate::access::oidc::OidcConfig;
use crate::events::DEFAULT_INSTANCE;
use clap::error::ErrorKind;
use clap::{Arg, ArgGroup, ArgMatches, Args, Command, FromArgMatches, Parser};
use std::ffi::{OsStr, OsString};

/// Parses `C` from the process's arguments and environment (a blank variable counts as
/// unset). `--help` and `--version` print and exit; any other error is returned, its
/// message clap's (naming the flag and the variable).
pub fn parse<C: Parser>() -> anyhow::Result<C> {
    parse_from(std::env::args_os(), |name| std::env::var_os(name))
}

/// [`parse`] with these arguments (the first is the program's name), `lookup` telling
/// which variables are set. Variables `lookup` finds blank are taken as unset; the others
/// are read by clap from the process environment.
pub fn parse_from<C, I, T>(
    args: I,
    lookup: impl Fn(&OsStr) -> Option<OsString>,
) -> anyhow::Result<C>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = blank_is_unset(C::command(), lookup);
    let result = command
        .try_get_matches_from_mut(args)
        .and_then(|mut matches| C::from_arg_matches_mut(&mut matches));
    match result {
        Ok(config) => Ok(config),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => Err(anyhow::anyhow!(
            "invalid configuration: {}",
            e.format(&mut command)
                .to_string()
                .trim_start_matches("error: ")
                .trim_end()
        )),
    }
}

/// `command` without the environment variable of each option whose variable `lookup`
/// finds empty or only whitespace: such a variable counts as unset.
pub fn blank_is_unset(command: Command, lookup: impl Fn(&OsStr) -> Option<OsString>) -> Command {
    command.mut_args(|arg| {
        let blank = arg
            .get_env()
            .and_then(&lookup)
            .is_some_and(|value| value.to_string_lossy().trim().is_empty());
        if blank {
            arg.env(None::<&'static str>)
        } else {
            arg
        }
    })
}

/// The value parser of text options: refuses an empty (or only whitespace) value.
pub fn non_empty(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(value.to_owned())
    }
}

/// `DROGUE_TABLE`: the registry's DynamoDB table (required).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Table {
    /// The DynamoDB table of the registry.
    #[arg(long = "table", env = "DROGUE_TABLE", value_name = "DROGUE_TABLE", value_parser = non_empty)]
    pub table: String,
}

impl Table {
    pub fn as_str(&self) -> &str {
        &self.table
    }
}

impl std::ops::Deref for Table {
    type Target = str;
    fn deref(&self) -> &str {
        &self.table
    }
}

impl From<&str> for Table {
    fn from(table: &str) -> Self {
        Self {
            table: table.to_owned(),
        }
    }
}

/// `DROGUE_ADMIN_ROLE`: the role that may do everything (default `drogue-admin`).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct AdminRole {
    /// The role that may do everything (in drogue-local, the bootstrapped administrator
    /// holds it).
    #[arg(long = "admin-role", env = "DROGUE_ADMIN_ROLE", value_name = "DROGUE_ADMIN_ROLE", default_value = AccessControl::DEFAULT_ADMIN_ROLE, value_parser = non_empty)]
    pub admin_role: String,
}

impl AdminRole {
    pub fn as_str(&self) -> &str {
        &self.admin_role
    }
}

impl Default for AdminRole {
    fn default() -> Self {
        AccessControl::DEFAULT_ADMIN_ROLE.into()
    }
}

impl std::ops::Deref for AdminRole {
    type Target = str;
    fn deref(&self) -> &str {
        &self.admin_role
    }
}

impl From<&str> for AdminRole {
    fn from(role: &str) -> Self {
        Self {
            admin_role: role.to_owned(),
        }
    }
}

/// `DROGUE_INSTANCE`: the `instance` extension of events (default `drogue`).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Instance {
    /// The `instance` extension of the events this function writes.
    #[arg(long = "instance", env = "DROGUE_INSTANCE", value_name = "DROGUE_INSTANCE", default_value = DEFAULT_INSTANCE, value_parser = non_empty)]
    pub instance: String,
}

impl Instance {
    pub fn as_str(&self) -> &str {
        &self.instance
    }
}

impl Default for Instance {
    fn default() -> Self {
        DEFAULT_INSTANCE.into()
    }
}

impl std::ops::Deref for Instance {
    type Target = str;
    fn deref(&self) -> &str {
        &self.instance
    }
}

impl From<&str> for Instance {
    fn from(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
        }
    }
}

/// `DROGUE_IOT_DATA_ENDPOINT`: the account's IoT data endpoint
/// (`https://...-ats.iot.<region>.amazonaws.com`), if not the SDK's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct IotData {
    /// The account's IoT data endpoint, if not the SDK's default.
    #[arg(long = "iot-data-endpoint", env = "DROGUE_IOT_DATA_ENDPOINT", value_name = "DROGUE_IOT_DATA_ENDPOINT", value_parser = non_empty)]
    pub iot_data_endpoint: Option<String>,
}

/// The id of the OIDC issuer's argument, and of the group it makes (an `Option<OidcConfig>`
/// is `Some` when the issuer is set).
const OIDC_ISSUER: &str = "oidc_issuer";
const OIDC_AUDIENCE: &str = "oidc_audience";
const OIDC_GROUP: &str = "OidcConfig";

/// `DROGUE_OIDC_ISSUER` and `DROGUE_OIDC_AUDIENCE`, flattened as `Option<OidcConfig>`: an
/// OpenID Connect issuer whose bearer tokens are accepted (none without an issuer; an
/// audience without an issuer is ignored).
impl Args for OidcConfig {
    fn group_id() -> Option<clap::Id> {
        Some(clap::Id::from(OIDC_GROUP))
    }

    fn augment_args(command: Command) -> Command {
        command
            .arg(
                Arg::new(OIDC_ISSUER)
                    .long("oidc-issuer")
                    .env("DROGUE_OIDC_ISSUER")
                    .value_name("DROGUE_OIDC_ISSUER")
                    .value_parser(non_empty)
                    .help(
                        "An OpenID Connect issuer (e.g. a Keycloak realm URL) whose bearer \
                         tokens are accepted besides access tokens",
                    ),
            )
            .arg(
                Arg::new(OIDC_AUDIENCE)
                    .long("oidc-audience")
                    .env("DROGUE_OIDC_AUDIENCE")
                    .value_name("DROGUE_OIDC_AUDIENCE")
                    .value_parser(non_empty)
                    .help(
                        "The audience (`aud` or `azp`) bearer tokens must be for: the client \
                         id, whose client roles count besides the realm roles",
                    ),
            )
            .group(ArgGroup::new(OIDC_GROUP).arg(OIDC_ISSUER).multiple(true))
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for OidcConfig {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let issuer = matches
            .get_one::<String>(OIDC_ISSUER)
            .cloned()
            .ok_or_else(|| {
                clap::Error::raw(
                    ErrorKind::MissingRequiredArgument,
                    "--oidc-issuer <DROGUE_OIDC_ISSUER> is required for an OIDC configuration\n",
                )
            })?;
        let audience = matches.get_one::<String>(OIDC_AUDIENCE).cloned();
        Ok(OidcConfig::new(issuer, audience))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// A parse of `C` from flags alone, as the unit tests of the configurations do; the error
/// as [`parse`] words it.
pub fn try_parse_flags<C: Parser>(args: &[&str]) -> anyhow::Result<C> {
    parse_from(std::iter::once("test").chain(args.iter().copied()), |_| {
        None
    })
}

/// Asserts that `args` are refused as a `C` (a failed test otherwise) and that the error
/// names each of `names` (flags, variables, words such as `empty`); the error. The unit
/// tests of the configurations check their refusals with it.
#[track_caller]
pub fn assert_refused<C: Parser>(args: &[&str], names: &[&str]) -> String {
    let Err(error) = try_parse_flags::<C>(args) else {
        panic!("{args:?} must be refused");
    };
    let error = error.to_string();
    for name in names {
        assert!(error.contains(name), "{args:?}: no {name:?} in: {error}");
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Debug, Parser)]
    struct Shared {
        #[command(flatten)]
        table: Table,
        #[command(flatten)]
        admin_role: AdminRole,
        #[command(flatten)]
        instance: Instance,
        #[command(flatten)]
        iot: IotData,
        #[command(flatten)]
        oidc: Option<OidcConfig>,
    }

    #[test]
    fn defaults_and_flags() {
        let config = Shared::try_parse_from(["t", "--table", "devices"]).unwrap();
        assert_eq!(config.table.as_str(), "devices");
        assert_eq!(config.admin_role.as_str(), "drogue-admin");
        assert_eq!(config.instance.as_str(), "drogue");
        assert_eq!(config.iot.iot_data_endpoint, None);
        assert!(config.oidc.is_none());
        let config = Shared::try_parse_from([
            "t",
            "--table",
            "devices",
            "--admin-role",
            "root",
            "--instance",
            "mine",
            "--oidc-issuer",
            "https://sso/realms/drogue",
            "--oidc-audience",
            "drogue",
        ])
        .unwrap();
        assert_eq!(config.admin_role.as_str(), "root");
        assert_eq!(config.instance.as_str(), "mine");
        let oidc = config.oidc.unwrap();
        assert_eq!(oidc.issuer, "https://sso/realms/drogue");
        assert_eq!(oidc.audience.as_deref(), Some("drogue"));
    }

    #[test]
    fn an_audience_without_an_issuer_is_ignored() {
        let config =
            Shared::try_parse_from(["t", "--table", "x", "--oidc-audience", "drogue"]).unwrap();
        assert!(config.oidc.is_none());
    }

    #[test]
    fn missing_and_empty_values_are_refused_naming_the_variable() {
        assert_refused::<Shared>(&[], &["--table", "DROGUE_TABLE"]);
        for flag in ["--table", "--admin-role", "--instance", "--oidc-issuer"] {
            let mut args = vec![flag, " "];
            if flag != "--table" {
                args.extend(["--table", "x"]);
            }
            assert_refused::<Shared>(&args, &[flag, "empty"]);
        }
    }

    #[test]
    fn a_blank_variable_counts_as_unset() {
        let blank = |name: &OsStr| {
            (name == "DROGUE_TABLE" || name == "DROGUE_ADMIN_ROLE").then(|| OsString::from(" "))
        };
        let command = blank_is_unset(Shared::command(), blank);
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "table" || id == "admin_role" {
                assert_eq!(arg.get_env(), None, "{id}");
            }
            if id == "instance" {
                assert_eq!(arg.get_env(), Some(OsStr::new("DROGUE_INSTANCE")));
            }
        }
        let error = parse_from::<Shared, _, _>(["t"], blank)
            .unwrap_err()
            .to_string();
        assert!(error.contains("DROGUE_TABLE"), "{error}");
        let config = parse_from::<Shared, _, _>(["t", "--table", "x"], blank).unwrap();
        assert_eq!(config.admin_role.as_str(), "drogue-admin");
    }
}
