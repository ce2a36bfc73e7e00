//! `ferry secrets encrypt|decrypt|edit FILE`: SOPS files with age keys, natively (no `sops`
//! binary needed). Decrypted output goes to stdout only; `edit` is the one place plaintext
//! touches a file system, a private tmpfs directory, removed afterwards (see docs/secrets.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ferry_engine::decrypt::sops::{self, AgeKeys, EncryptOptions, Format, Selectors, config};

use crate::output::EXIT_OK;

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum SecretsCommand {
    /// Encrypt a YAML/JSON file for age recipients (--age, or .sops.yaml creation_rules).
    #[command(
        after_help = "Examples:\n  ferry secrets encrypt --age age1… secret.yaml > secret.enc.yaml\n  ferry secrets encrypt --in-place --encrypted-regex '^(data|stringData)$' secret.yaml"
    )]
    Encrypt(EncryptArgs),
    /// Decrypt a SOPS file to stdout (keys: SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, ~/.config/sops/age/keys.txt).
    #[command(
        after_help = "Examples:\n  ferry secrets decrypt secret.enc.yaml\n  SOPS_AGE_KEY_FILE=key.txt ferry secrets decrypt values.enc.yaml > /dev/shm/values.yaml"
    )]
    Decrypt(DecryptArgs),
    /// Decrypt into a private tmpfs file, run $EDITOR, re-encrypt in place.
    #[command(
        after_help = "Examples:\n  ferry secrets edit secret.enc.yaml\n  EDITOR=nano ferry secrets edit values.enc.yaml"
    )]
    Edit(EditArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FileType {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The plaintext file.
    pub file: PathBuf,
    /// age recipient (age1…); repeatable. Without it, the first matching creation rule of the
    /// nearest .sops.yaml decides recipients and selectors.
    #[arg(long = "age", value_name = "RECIPIENT")]
    pub age: Vec<String>,
    #[command(flatten)]
    pub selectors: SelectorArgs,
    /// Replace the file with its encrypted form instead of printing it.
    #[arg(short = 'i', long)]
    pub in_place: bool,
    /// File type (default: from the extension; .json is JSON, anything else YAML).
    #[arg(long, value_enum)]
    pub input_type: Option<FileType>,
}

#[derive(Debug, Args, Default)]
pub struct SelectorArgs {
    /// Encrypt only values under keys matching this regex (e.g. '^(data|stringData)$').
    #[arg(long, value_name = "REGEX")]
    pub encrypted_regex: Option<String>,
    /// Leave values under keys matching this regex in clear.
    #[arg(long, value_name = "REGEX")]
    pub unencrypted_regex: Option<String>,
    /// Encrypt only values under keys ending with this suffix.
    #[arg(long, value_name = "SUFFIX")]
    pub encrypted_suffix: Option<String>,
    /// Leave values under keys ending with this suffix in clear (default _unencrypted).
    #[arg(long, value_name = "SUFFIX")]
    pub unencrypted_suffix: Option<String>,
    /// Compute the MAC over encrypted values only.
    #[arg(long)]
    pub mac_only_encrypted: bool,
}

impl SelectorArgs {
    fn any(&self) -> bool {
        self.encrypted_regex.is_some()
            || self.unencrypted_regex.is_some()
            || self.encrypted_suffix.is_some()
            || self.unencrypted_suffix.is_some()
            || self.mac_only_encrypted
    }

    fn to_selectors(&self) -> Selectors {
        Selectors {
            unencrypted_suffix: self.unencrypted_suffix.clone(),
            encrypted_suffix: self.encrypted_suffix.clone(),
            unencrypted_regex: self.unencrypted_regex.clone(),
            encrypted_regex: self.encrypted_regex.clone(),
            mac_only_encrypted: self.mac_only_encrypted,
        }
    }
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The SOPS-encrypted file.
    pub file: PathBuf,
    /// File type (default: from the extension).
    #[arg(long, value_enum)]
    pub input_type: Option<FileType>,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// The SOPS-encrypted file.
    pub file: PathBuf,
    /// File type (default: from the extension).
    #[arg(long, value_enum)]
    pub input_type: Option<FileType>,
}

pub fn run(command: &SecretsCommand) -> Result<u8> {
    match command {
        SecretsCommand::Encrypt(args) => encrypt(args),
        SecretsCommand::Decrypt(args) => decrypt(args),
        SecretsCommand::Edit(args) => edit(args),
    }
}

fn format_of(file: &Path, explicit: Option<FileType>) -> Format {
    match explicit {
        Some(FileType::Yaml) => Format::Yaml,
        Some(FileType::Json) => Format::Json,
        None => Format::from_path(file),
    }
}

fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Recipients and selectors: flags win; otherwise the nearest `.sops.yaml`.
fn encrypt_options(
    file: &Path,
    age: &[String],
    selectors: &SelectorArgs,
) -> Result<EncryptOptions> {
    if !age.is_empty() {
        return EncryptOptions::new(age.to_vec(), selectors.to_selectors())
            .map_err(|m| anyhow::anyhow!("{m}"));
    }
    let start = std::path::absolute(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let Some(config_file) = config::find_config(&start) else {
        bail!(
            "no age recipient: pass --age age1… or create a .sops.yaml with creation_rules (none found above {})",
            start.display()
        );
    };
    let mut options = config::options_for(&config_file, file)?;
    if selectors.any() {
        options = EncryptOptions::new(options.age_recipients, selectors.to_selectors())
            .map_err(|m| anyhow::anyhow!("{m}"))?;
    }
    Ok(options)
}

fn encrypt(args: &EncryptArgs) -> Result<u8> {
    let format = format_of(&args.file, args.input_type);
    let plaintext = zeroize::Zeroizing::new(read(&args.file)?);
    let options = encrypt_options(&args.file, &args.age, &args.selectors)?;
    let encrypted = sops::encrypt(&plaintext, format, &args.file, &options)?;
    if args.in_place {
        write_replacing(&args.file, &encrypted)?;
    } else {
        std::io::stdout().write_all(&encrypted)?;
    }
    Ok(EXIT_OK)
}

fn decrypt(args: &DecryptArgs) -> Result<u8> {
    let format = format_of(&args.file, args.input_type);
    let bytes = read(&args.file)?;
    let keys = AgeKeys::from_env()?;
    let plaintext = sops::decrypt(&bytes, format, &args.file, &keys)?;
    std::io::stdout().write_all(&plaintext)?;
    Ok(EXIT_OK)
}

/// Replace `file` atomically (temp file in the same directory, then rename).
fn write_replacing(file: &Path, bytes: &[u8]) -> Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write next to {}", file.display()))?;
    tmp.write_all(bytes)?;
    tmp.persist(file)
        .with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

/// A private directory on a memory file system for the plaintext `edit` needs.
fn private_tmpfs_dir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let candidates = [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(PathBuf::from("/dev/shm")),
    ];
    for base in candidates.into_iter().flatten() {
        if base.is_dir()
            && let Ok(dir) = tempfile::Builder::new()
                .prefix("ferry-edit-")
                .tempdir_in(&base)
        {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
            return Ok(dir);
        }
    }
    bail!(
        "no memory-backed directory for the plaintext ($XDG_RUNTIME_DIR or /dev/shm); \
         ferry secrets edit does not write plaintext to disk — use decrypt/encrypt with a pipe instead"
    )
}

fn edit(args: &EditArgs) -> Result<u8> {
    use std::os::unix::fs::OpenOptionsExt;
    let format = format_of(&args.file, args.input_type);
    let bytes = read(&args.file)?;
    let docs = serde_saphyr::from_slice_multiple::<serde_json::Value>(&bytes)
        .with_context(|| format!("{} is not YAML/JSON", args.file.display()))?;
    let Some(block) = docs.iter().find(|d| sops::is_encrypted_value(d)) else {
        bail!(
            "{} is not SOPS-encrypted; use `ferry secrets encrypt` first",
            args.file.display()
        );
    };
    let keys = AgeKeys::from_env()?;
    let plaintext = sops::decrypt(&bytes, format, &args.file, &keys)?;

    // Re-encrypt for the same recipients and selectors the file has now.
    let meta = &block["sops"];
    let recipients: Vec<String> = meta["age"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["recipient"].as_str().map(str::to_string))
        .collect();
    let text = |k: &str| meta[k].as_str().map(str::to_string);
    let selectors = Selectors {
        unencrypted_suffix: text("unencrypted_suffix"),
        encrypted_suffix: text("encrypted_suffix"),
        unencrypted_regex: text("unencrypted_regex"),
        encrypted_regex: text("encrypted_regex"),
        mac_only_encrypted: meta["mac_only_encrypted"].as_bool().unwrap_or(false),
    };
    let options = EncryptOptions::new(recipients, selectors).map_err(|m| anyhow::anyhow!("{m}"))?;

    let dir = private_tmpfs_dir()?;
    let ext = match format {
        Format::Json => "json",
        Format::Yaml => "yaml",
    };
    let tmp = dir.path().join(format!("edit.{ext}"));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&plaintext)?;
    }
    let editor = std::env::var("EDITOR")
        .or_else(|_| std::env::var("VISUAL"))
        .unwrap_or_else(|_| "vi".into());
    // $EDITOR may carry arguments ("code --wait"), so run it through the shell.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("ferry-edit")
        .arg(&tmp)
        .status()
        .with_context(|| format!("cannot start the editor {editor:?}"))?;
    let edited = zeroize::Zeroizing::new(std::fs::read(&tmp)?);
    // Remove the plaintext before anything else can fail.
    drop(dir);
    if !status.success() {
        bail!(
            "the editor exited with {status}; {} is unchanged",
            args.file.display()
        );
    }
    if edited.as_slice() == plaintext.as_slice() {
        eprintln!("no changes; {} is unchanged", args.file.display());
        return Ok(EXIT_OK);
    }
    let encrypted = sops::encrypt(&edited, format, &args.file, &options)?;
    write_replacing(&args.file, &encrypted)?;
    Ok(EXIT_OK)
}
