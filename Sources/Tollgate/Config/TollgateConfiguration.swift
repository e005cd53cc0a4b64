import Foundation

/// A Tollgate configuration file, read and validated: the plans that keys are put on.
///
/// Files are YAML. Every error names the file, the line, the field and what was expected against what
/// was found (`ConfigurationError`); the first error found is reported.
///
/// - Configuration keys (top level):
///   - `version` (int, optional, default: 1): the format version; must be 1.
///   - `plans` (mapping, required): plan name → plan, in the order they are listed. At least one plan.
///     Plan names are 1-64 letters, digits, `-`, `_` or `.`, unique in the file.
///   - `server`, `upstream`, `store`, `keys`, `routes`, `unmatched`, `tracing` (optional): how `tollgate serve` runs;
///     see `SidecarSettings` for their keys and defaults.
///
/// - Plan keys (`plans.<name>`):
///   - `time_zone` (string, optional, default: `UTC`): the IANA zone in which calendar quotas start and
///     end, such as `America/Sao_Paulo`.
///   - `limits` (list, required): 1 to 8 limits. A request passes only when every enforced limit admits it.
///
/// - Limit keys (`plans.<name>.limits[<i>]`), common to every algorithm:
///   - `name` (string, required): the policy name shown in `RateLimit-Policy` headers and denials;
///     1-64 letters, digits, `-`, `_` or `.`, unique within the plan.
///   - `algorithm` (string, required): `token_bucket`, `sliding_log`, `sliding_window`, `fixed_window`
///     or `calendar`.
///   - `scope` (string, optional, default: `key`): `key` counts each API key on its own,
///     `organization` counts all keys of an organization together.
///   - `shadow` (bool, optional, default: false): a shadow limit is evaluated and reported but never denies.
///
/// - Limit keys by algorithm (a key of another algorithm is an error):
///   - `token_bucket`: `capacity` (int, required): the bucket size, the largest burst;
///     `refill` (mapping, required): `tokens` (int, required) added every `per` (duration, required).
///   - `sliding_log` (exact, keeps one entry per request), `sliding_window` (two-window estimate) and
///     `fixed_window` (windows aligned to the Unix epoch): `limit` (int, required) per
///     `window` (duration, required, at most 366d).
///   - `calendar`: `limit` (int, required) per `period` (string, required): `minute`, `hour`, `day`,
///     `week` (ISO, starting Monday) or `month`, in the plan's time zone.
///
/// - Value types:
///   - int: a positive decimal integer, unquoted (`1000` or `1_000`); `"5"`, `1.5`, `0` and `-5` are rejected.
///   - bool: `true` or `false`, unquoted.
///   - duration: a positive integer followed by `ms`, `s`, `m` (minutes), `h` or `d` (`250ms`, `1s`, `1m`,
///     `24h`, `30d`), no spaces; a bare integer means seconds.
///
/// YAML anchors and aliases may share a plan or a limit between plans; merge keys (`<<`) are not supported.
/// See `Config/tollgate.yaml` for a documented example.
public struct TollgateConfiguration: Sendable {
    /// The plans, in file order.
    public internal(set) var plans: [Plan]
    /// The sidecar's sections; their defaults when the file has none.
    public internal(set) var sidecar = SidecarSettings()

    init(plans: [Plan]) {
        self.plans = plans
    }

    /// The plan with this name, or nil.
    public func plan(named name: String) -> Plan? {
        plans.first { $0.name == name }
    }

    /// Reads and validates a configuration file.
    /// - Throws: `ConfigurationError` when the file is missing, unreadable, not UTF-8, not YAML or not valid.
    public static func load(contentsOfFile path: String) throws(ConfigurationError) -> TollgateConfiguration {
        func failure(_ message: String) -> ConfigurationError {
            ConfigurationError(file: path, line: nil, path: "", message: message)
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw failure("no such file; expected the path of a YAML configuration file")
        }
        if isDirectory.boolValue {
            throw failure("is a directory; expected the path of a YAML configuration file")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let reason = FileManager.default.isReadableFile(atPath: path) ? "\(error.localizedDescription)" : "permission denied"
            throw failure("cannot read the file: \(reason)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw failure("expected UTF-8 text, found bytes that are not UTF-8")
        }
        return try parse(yaml: text, file: path)
    }

    /// Validates configuration text; `file` names it in errors.
    /// - Throws: `ConfigurationError` when the text is not YAML or not a valid configuration.
    public static func parse(yaml: String, file: String) throws(ConfigurationError) -> TollgateConfiguration {
        let document = try YAMLDocument.compose(yaml, file: file)
        guard let root = document.root else {
            throw ConfigurationError(
                file: file, line: nil, path: "",
                message: "the file is empty; expected a mapping with a plans section")
        }
        let reader = ConfigReader(file: file, renamedKeys: document.renamedKeys)
        return try reader.configuration(root)
    }
}
