//! The workload's argv on the kernel command line.
//!
//! The host appends ` -- ` and the encoded argv to the kernel command line;
//! the guest init reads `/proc/cmdline` and takes everything after the first
//! standalone `--` token. The encoding stays inside what the kernel's own
//! parser (`next_arg` in `lib/cmdline.c`) reads the same way, because the
//! kernel also parses those words (and hands them to init as its argv):
//!
//! - words are separated by whitespace — for the kernel that is ASCII space,
//!   `\t`, `\n`, `\v`, `\f`, `\r` *and the byte 0xA0* (Latin-1 no-break
//!   space, which also occurs inside UTF-8 sequences such as `à`);
//! - a word that starts with `"` runs to the matching `"`; quotes are stripped.
//!
//! So an argument is written bare unless it is empty or holds one of those
//! bytes, in which case it is wrapped in double quotes. Quotes, newlines and
//! NUL inside an argument cannot be represented and are refused.

use super::ProtoError;

/// Size of the kernel's command-line buffer on x86 (`COMMAND_LINE_SIZE`),
/// including the terminating NUL: a command line may be at most
/// `MAX_CMDLINE - 1` bytes long. [`append_argv`] enforces it.
pub const MAX_CMDLINE: usize = 2048;

/// Most arguments (program included) a workload may have.
///
/// The kernel copies every word after `--` into init's argv, a table of
/// `CONFIG_INIT_ENV_ARG_LIMIT` (32) entries whose first is init itself; one
/// word more makes the kernel panic at boot ("Too many boot init vars").
/// Bare words before `--` that the kernel does not know also take entries, so
/// the host's part of the command line must not contain any.
pub const MAX_ARGS: usize = 31;

const SEPARATOR: &str = "--";

/// Whitespace as the kernel's `isspace` sees it (`lib/ctype.c`).
fn is_kernel_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// Whitespace that separates words when decoding: the ASCII part of the
/// kernel's set. (0xA0 is never a whole `char`; the encoder quotes any
/// argument holding that byte, so decoding never needs to split there.)
fn is_separator_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Host side: encodes `args` (program first) as kernel command-line words,
/// without the leading ` -- `.
///
/// Fails if an argument holds a double quote, a newline or a NUL, if there are
/// more than [`MAX_ARGS`] arguments, or if the words alone could never fit in
/// [`MAX_CMDLINE`]. The caller still has to check the whole command line;
/// [`append_argv`] does both.
pub fn encode_argv(args: &[String]) -> Result<String, ProtoError> {
    if args.len() > MAX_ARGS {
        return Err(ProtoError::TooManyArgs {
            count: args.len(),
            max: MAX_ARGS,
        });
    }
    let mut out = String::new();
    for (index, arg) in args.iter().enumerate() {
        if let Some(what) = unencodable(arg) {
            return Err(ProtoError::UnencodableArg { index, what });
        }
        if index > 0 {
            out.push(' ');
        }
        if arg.is_empty() || arg.bytes().any(is_kernel_space) {
            out.push('"');
            out.push_str(arg);
            out.push('"');
        } else {
            out.push_str(arg);
        }
    }
    let len = out.len() + " -- ".len();
    if len > MAX_CMDLINE - 1 {
        return Err(ProtoError::CmdlineTooLong {
            len,
            max: MAX_CMDLINE - 1,
        });
    }
    Ok(out)
}

fn unencodable(arg: &str) -> Option<&'static str> {
    arg.chars().find_map(|c| match c {
        '"' => Some("a double quote"),
        '\n' => Some("a newline"),
        '\0' => Some("a NUL character"),
        _ => None,
    })
}

/// Host side: `base` (the VMM's own kernel parameters, which must not contain
/// a standalone `--`) followed by ` -- ` and the encoded `args`, checked
/// against the kernel's [`MAX_CMDLINE`]. With no `args`, returns `base` alone.
pub fn append_argv(base: &str, args: &[String]) -> Result<String, ProtoError> {
    debug_assert!(
        !Tokens::new(base).any(|t| t.is_separator()),
        "the host's kernel parameters must not contain a standalone `--`"
    );
    let encoded = encode_argv(args)?;
    let cmdline = match (base.is_empty(), args.is_empty()) {
        (_, true) => base.to_owned(),
        (true, false) => format!("{SEPARATOR} {encoded}"),
        (false, false) => format!("{base} {SEPARATOR} {encoded}"),
    };
    if cmdline.len() > MAX_CMDLINE - 1 {
        return Err(ProtoError::CmdlineTooLong {
            len: cmdline.len(),
            max: MAX_CMDLINE - 1,
        });
    }
    Ok(cmdline)
}

/// Guest side: the workload's argv from a kernel command line (the contents
/// of `/proc/cmdline`): every word after the first `--` that is not inside
/// quotes. Empty if there is no such `--` or nothing follows it.
///
/// Words are separated by ASCII whitespace outside double quotes; quotes group
/// and are removed wherever they appear (`a"b c"d` is one word, `ab cd`). An
/// unterminated quote runs to the end of the line. Never fails: this runs in
/// PID 1, where any input must lead somewhere sensible.
pub fn decode_argv(cmdline: &str) -> Vec<String> {
    // /proc/cmdline ends with a newline that is not part of the command line.
    let cmdline = cmdline.strip_suffix('\n').unwrap_or(cmdline);
    let mut tokens = Tokens::new(cmdline);
    if tokens.by_ref().any(|t| t.is_separator()) {
        tokens.map(|t| t.text).collect()
    } else {
        Vec::new()
    }
}

/// Kernel parameter naming the box's root filesystem, before the `--`:
/// `a3s.root=virtiofs:<tag>` mounts the virtio-fs share `<tag>` as the root
/// of the main process; `a3s.root=overlay:<lower>,<upper>` mounts an overlay
/// of the read-only share `<lower>` (an image's tree, shared by every box of
/// that image) under the writable share `<upper>` (the box's own layer).
/// Without it the guest runs the workload from the initramfs itself (the
/// argv after `--`), as tiny test guests do.
pub const ROOT_PARAM: &str = "a3s.root";

/// Longest virtio-fs tag (the device's config field is 36 bytes).
pub const MAX_FS_TAG: usize = 36;

/// Where the box's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A virtio-fs share with this tag.
    Virtiofs {
        /// The device's tag (`rootfs` for a root directory of the user's).
        tag: String,
    },
    /// An overlay: the share `lower`, read-only, under the share `upper`,
    /// whose `upper/` directory takes the box's writes (overlayfs's upper
    /// directory) and whose `work/` is overlayfs's work directory.
    Overlay { lower: String, upper: String },
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_FS_TAG
        && tag
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b',')
}

impl RootSource {
    /// Host side: the kernel parameter that makes the guest boot into this
    /// root, for example `a3s.root=virtiofs:rootfs`.
    pub fn param(&self) -> Result<String, ProtoError> {
        let value = match self {
            RootSource::Virtiofs { tag } => format!("virtiofs:{tag}"),
            RootSource::Overlay { lower, upper } => format!("overlay:{lower},{upper}"),
        };
        match Self::parse(&value) {
            Some(ref parsed) if parsed == self => Ok(format!("{ROOT_PARAM}={value}")),
            _ => Err(ProtoError::BadRoot { value }),
        }
    }

    fn parse(value: &str) -> Option<RootSource> {
        if let Some(tag) = value.strip_prefix("virtiofs:") {
            return valid_tag(tag).then(|| RootSource::Virtiofs { tag: tag.into() });
        }
        let (lower, upper) = value.strip_prefix("overlay:")?.split_once(',')?;
        (valid_tag(lower) && valid_tag(upper) && lower != upper).then(|| RootSource::Overlay {
            lower: lower.into(),
            upper: upper.into(),
        })
    }
}

/// Guest side: the root filesystem named by the last [`ROOT_PARAM`] before
/// the `--` of a kernel command line, `None` when there is none.
pub fn decode_root(cmdline: &str) -> Result<Option<RootSource>, ProtoError> {
    let cmdline = cmdline.strip_suffix('\n').unwrap_or(cmdline);
    let mut found = None;
    for token in Tokens::new(cmdline) {
        if token.is_separator() {
            break;
        }
        let Some(value) = token
            .text
            .strip_prefix(ROOT_PARAM)
            .and_then(|rest| rest.strip_prefix('='))
        else {
            continue;
        };
        found = Some(RootSource::parse(value).ok_or_else(|| ProtoError::BadRoot {
            value: value.to_owned(),
        })?);
    }
    Ok(found)
}

struct Token {
    text: String,
    /// Whether any part of the word was quoted (`"--"` is not the separator).
    quoted: bool,
}

impl Token {
    fn is_separator(&self) -> bool {
        !self.quoted && self.text == SEPARATOR
    }
}

struct Tokens<'a> {
    chars: std::str::Chars<'a>,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Self {
        Tokens { chars: s.chars() }
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let mut text = String::new();
        let mut started = false;
        let mut quoted = false;
        let mut in_quote = false;
        for c in self.chars.by_ref() {
            if c == '"' {
                in_quote = !in_quote;
                quoted = true;
                started = true;
            } else if is_separator_char(c) && !in_quote {
                if started {
                    break;
                }
            } else {
                text.push(c);
                started = true;
            }
        }
        started.then_some(Token { text, quoted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "console=ttyS0 reboot=k panic=-1 rdinit=/init";

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// What the guest would decode from what the host would pass.
    fn round_trip(args: &[String]) -> Vec<String> {
        let cmdline = append_argv(BASE, args).expect("encodable");
        // The kernel exposes the line with a trailing newline.
        decode_argv(&format!("{cmdline}\n"))
    }

    #[test]
    fn root_param_round_trips() {
        let param = RootSource::Virtiofs {
            tag: "rootfs".into(),
        }
        .param()
        .unwrap();
        assert_eq!(param, "a3s.root=virtiofs:rootfs");
        let cmdline = append_argv(&format!("{BASE} {param}"), &strings(&["sh"])).unwrap();
        assert_eq!(
            decode_root(&format!("{cmdline}\n")).unwrap(),
            Some(RootSource::Virtiofs {
                tag: "rootfs".into()
            })
        );
    }

    #[test]
    fn overlay_root_param_round_trips() {
        let root = RootSource::Overlay {
            lower: "image".into(),
            upper: "layer".into(),
        };
        let param = root.param().unwrap();
        assert_eq!(param, "a3s.root=overlay:image,layer");
        assert_eq!(
            decode_root(&format!("console=ttyS0 {param} -- sh\n")).unwrap(),
            Some(root)
        );
    }

    #[test]
    fn no_root_param_means_the_initramfs() {
        assert_eq!(decode_root("console=ttyS0 -- sh\n").unwrap(), None);
        assert_eq!(decode_root("").unwrap(), None);
    }

    #[test]
    fn a_root_param_after_the_separator_belongs_to_the_workload() {
        assert_eq!(
            decode_root("console=ttyS0 -- echo a3s.root=virtiofs:x\n").unwrap(),
            None
        );
    }

    #[test]
    fn the_last_root_param_wins() {
        assert_eq!(
            decode_root("a3s.root=virtiofs:a a3s.root=virtiofs:b").unwrap(),
            Some(RootSource::Virtiofs { tag: "b".into() })
        );
    }

    #[test]
    fn bad_root_params_are_refused() {
        for bad in [
            "a3s.root=virtiofs:",
            "a3s.root=9p:rootfs",
            "a3s.root=",
            "a3s.root=virtiofs:0123456789012345678901234567890123456",
            "a3s.root=overlay:image",
            "a3s.root=overlay:image,",
            "a3s.root=overlay:,layer",
            "a3s.root=overlay:same,same",
        ] {
            assert!(
                matches!(decode_root(bad), Err(ProtoError::BadRoot { .. })),
                "{bad}"
            );
        }
        for tag in ["has space", "", "a,b"] {
            let bad = RootSource::Virtiofs { tag: tag.into() };
            assert!(bad.param().is_err(), "{tag:?}");
        }
        let same = RootSource::Overlay {
            lower: "x".into(),
            upper: "x".into(),
        };
        assert!(same.param().is_err(), "one share cannot be both layers");
        // Other parameters with the same prefix are not ours.
        assert_eq!(decode_root("a3s.rootx=1").unwrap(), None);
    }

    #[test]
    fn plain_words_round_trip_bare() {
        let args = strings(&["/bin/echo", "hello", "world"]);
        assert_eq!(encode_argv(&args).unwrap(), "/bin/echo hello world");
        assert_eq!(round_trip(&args), args);
    }

    #[test]
    fn empty_args_round_trip_as_empty_quotes() {
        let args = strings(&["printf", "", "%s|", ""]);
        assert_eq!(encode_argv(&args).unwrap(), r#"printf "" %s| """#);
        assert_eq!(round_trip(&args), args);
    }

    #[test]
    fn args_with_spaces_and_tabs_round_trip() {
        let args = strings(&["sh", "-c", "echo  a\tb ", " ", "\t", "\r\x0b\x0c"]);
        assert_eq!(round_trip(&args), args);
    }

    #[test]
    fn unicode_args_round_trip() {
        let args = strings(&["echo", "héllo", "日本語", "😀 smile", "à"]);
        assert_eq!(round_trip(&args), args);
    }

    #[test]
    fn args_holding_the_kernel_space_byte_0xa0_are_quoted() {
        // 'à' is C3 A0 in UTF-8 and U+00A0 is C2 A0: the kernel would split
        // both words at the A0 byte if they were bare.
        let args = strings(&["à", "\u{a0}", "\u{4e20}"]);
        assert_eq!(encode_argv(&args).unwrap(), "\"à\" \"\u{a0}\" \"\u{4e20}\"");
        assert_eq!(round_trip(&args), args);
    }

    #[test]
    fn shell_metacharacters_and_dashes_round_trip() {
        let args = strings(&[
            "sh",
            "-c",
            "--",
            "a=b",
            "a= b",
            "=x=y",
            "$HOME",
            "'q'",
            "back\\slash",
            "-",
        ]);
        assert_eq!(round_trip(&args), args);
    }

    #[test]
    fn empty_argv_leaves_the_base_untouched() {
        assert_eq!(append_argv(BASE, &[]).unwrap(), BASE);
        assert!(round_trip(&[]).is_empty());
    }

    #[test]
    fn empty_base_gets_just_the_separator_and_argv() {
        let args = strings(&["true"]);
        assert_eq!(append_argv("", &args).unwrap(), "-- true");
        assert_eq!(decode_argv("-- true"), args);
    }

    #[test]
    fn generated_args_round_trip() {
        // Small deterministic generator (xorshift) instead of a property-testing
        // dependency; the alphabet covers every class the encoder treats apart.
        let alphabet: Vec<char> = "aZ0-=\\'$ \t\r\x0b\x0cé\u{a0}à日😀".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % u64::try_from(bound).unwrap()).unwrap()
        };
        for _ in 0..2000 {
            let args: Vec<String> = (0..next(8))
                .map(|_| {
                    (0..next(6))
                        .map(|_| alphabet[next(alphabet.len())])
                        .collect()
                })
                .collect();
            assert_eq!(round_trip(&args), args, "args {args:?}");
        }
    }

    #[test]
    fn decode_takes_everything_after_the_first_separator() {
        assert_eq!(
            decode_argv("console=ttyS0 -- sh -c \"echo -- x\" -- y\n"),
            strings(&["sh", "-c", "echo -- x", "--", "y"])
        );
    }

    #[test]
    fn decode_without_separator_is_empty() {
        assert!(decode_argv("console=ttyS0 quiet\n").is_empty());
        assert!(decode_argv("").is_empty());
        assert!(decode_argv("\n").is_empty());
        assert!(decode_argv("console=ttyS0 --x x--\n").is_empty());
    }

    #[test]
    fn decode_with_nothing_after_separator_is_empty() {
        assert!(decode_argv("console=ttyS0 --\n").is_empty());
        assert!(decode_argv("console=ttyS0 --   \n").is_empty());
    }

    #[test]
    fn decode_ignores_a_quoted_separator() {
        assert_eq!(
            decode_argv(r#"a "--" b -- c"#),
            strings(&["c"]),
            "a quoted -- is an ordinary word"
        );
    }

    #[test]
    fn decode_collapses_runs_of_whitespace() {
        assert_eq!(decode_argv(" --\t\t a   b \r\n"), strings(&["a", "b"]),);
    }

    #[test]
    fn decode_strips_quotes_inside_words() {
        assert_eq!(decode_argv(r#"-- a"b c"d "e"f"#), strings(&["ab cd", "ef"]));
    }

    #[test]
    fn decode_runs_an_unterminated_quote_to_the_end() {
        assert_eq!(
            decode_argv("-- echo \"unterminated  words\n"),
            strings(&["echo", "unterminated  words"])
        );
        assert_eq!(decode_argv("-- \""), strings(&[""]));
        assert_eq!(decode_argv("a \"-- b"), Vec::<String>::new());
    }

    #[test]
    fn encode_refuses_a_double_quote() {
        let err = encode_argv(&strings(&["echo", "say \"hi\""])).unwrap_err();
        assert_eq!(
            err,
            ProtoError::UnencodableArg {
                index: 1,
                what: "a double quote"
            }
        );
    }

    #[test]
    fn encode_refuses_newline_and_nul() {
        assert!(matches!(
            encode_argv(&strings(&["a\nb"])),
            Err(ProtoError::UnencodableArg {
                index: 0,
                what: "a newline"
            })
        ));
        assert!(matches!(
            encode_argv(&strings(&["ok", "a\0b"])),
            Err(ProtoError::UnencodableArg { index: 1, .. })
        ));
    }

    #[test]
    fn encode_refuses_more_args_than_the_kernel_passes_to_init() {
        let ok: Vec<String> = (0..MAX_ARGS).map(|i| i.to_string()).collect();
        assert_eq!(round_trip(&ok), ok);
        let too_many: Vec<String> = (0..=MAX_ARGS).map(|i| i.to_string()).collect();
        assert_eq!(
            encode_argv(&too_many),
            Err(ProtoError::TooManyArgs {
                count: MAX_ARGS + 1,
                max: MAX_ARGS
            })
        );
    }

    #[test]
    fn encode_refuses_argv_that_can_never_fit() {
        let huge = vec!["x".repeat(MAX_CMDLINE)];
        assert!(matches!(
            encode_argv(&huge),
            Err(ProtoError::CmdlineTooLong { max, .. }) if max == MAX_CMDLINE - 1
        ));
    }

    #[test]
    fn append_checks_the_whole_command_line() {
        // Fits exactly: base + " -- " + arg == MAX_CMDLINE - 1 bytes.
        let room = MAX_CMDLINE - 1 - BASE.len() - " -- ".len();
        let fits = vec!["y".repeat(room)];
        assert_eq!(append_argv(BASE, &fits).unwrap().len(), MAX_CMDLINE - 1);
        assert_eq!(round_trip(&fits), fits);

        let over = vec!["y".repeat(room + 1)];
        assert_eq!(
            append_argv(BASE, &over),
            Err(ProtoError::CmdlineTooLong {
                len: MAX_CMDLINE,
                max: MAX_CMDLINE - 1
            })
        );
    }
}
