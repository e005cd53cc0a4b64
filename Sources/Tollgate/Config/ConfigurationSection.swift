import Yams

/// The top-level sections of a configuration file, read in this order.
///
/// Adding a section (`server`, `redis`, `keys`, `routes`) is one more case here: its name, whether it is
/// required, and the line that reads it into the configuration. Anything else at the top level is
/// rejected as an unknown field that lists these names.
enum ConfigurationSection: String, CaseIterable {
    case version
    case plans
    case server
    case upstream
    case store
    /// After `store`: keys from Redis share `store.url` by default.
    case keys
    case routes
    case unmatched
    case tracing

    /// Whether a file without this section is rejected.
    var isRequired: Bool {
        switch self {
        case .version: false
        case .plans: true
        case .server, .upstream, .store, .keys, .routes, .unmatched, .tracing: false
        }
    }

    /// What the section holds, for the "missing" message.
    var expected: String {
        switch self {
        case .version: "1"
        case .plans: "a mapping of plan names to plans"
        case .server, .upstream, .store, .keys, .tracing: "a mapping of \(rawValue) settings"
        case .routes: "a list of routes"
        case .unmatched: "pass or not_found"
        }
    }

    func read(
        _ node: Node, at path: FieldPath, with reader: ConfigReader, into configuration: inout TollgateConfiguration
    ) throws(ConfigurationError) {
        switch self {
        case .version: try reader.version(node, at: path)
        case .plans: configuration.plans = try reader.plans(node, at: path)
        case .server: configuration.sidecar.server = try reader.server(node, at: path)
        case .upstream: configuration.sidecar.upstream = try reader.upstream(node, at: path)
        case .store: configuration.sidecar.store = try reader.store(node, at: path)
        case .keys: configuration.sidecar.keys = try reader.keys(node, at: path, store: configuration.sidecar.store)
        case .routes: configuration.sidecar.routes = try reader.routes(node, at: path)
        case .unmatched: configuration.sidecar.unmatched = try reader.unmatched(node, at: path)
        case .tracing: configuration.sidecar.tracing = try reader.tracing(node, at: path)
        }
    }
}

extension ConfigReader {
    /// The only format version there is; a later incompatible format will bump it.
    static let formatVersion: Int64 = 1

    func version(_ node: Node, at path: FieldPath) throws(ConfigurationError) {
        if case .scalar(let scalar) = node, scalar.style == .plain,
            case .some(.some(let value)) = Self.integerValue(scalar.string), value == Self.formatVersion
        {
            return
        }
        throw error(
            at: node, path,
            "expected \(Self.formatVersion) (the only format version this Tollgate reads), found \(describe(node))")
    }

    /// The whole document: a mapping of sections.
    func configuration(_ root: Node) throws(ConfigurationError) -> TollgateConfiguration {
        let sections = ConfigurationSection.allCases.map(\.rawValue)
        let fields = try fields(of: root, at: .root, expected: "a mapping of sections (\(list(sections)))")
        try rejectUnknown(fields, allowed: sections, in: "the top level")
        var configuration = TollgateConfiguration(plans: [])
        for section in ConfigurationSection.allCases {
            let path = FieldPath.root.appending(section.rawValue)
            if let node = fields[section.rawValue] {
                try section.read(node, at: path, with: self, into: &configuration)
            } else if section.isRequired {
                throw error(at: root, path, "missing required section; expected \(section.expected)")
            }
        }
        return configuration
    }
}
