/// Why a configuration file cannot be used: the file, the line, the field and what was expected
/// against what was found, so that an operator can fix it without reading the source.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file as it was named to `load` or `parse`.
    public var file: String
    /// The 1-based line of the offending node, or nil when the problem is with the file as a whole
    /// (missing, unreadable, empty).
    public var line: Int?
    /// The field at fault, such as `plans.free.limits[1].capacity`; empty for the file itself.
    public var path: String
    /// What was expected and what was found.
    public var message: String

    public init(file: String, line: Int?, path: String, message: String) {
        self.file = file
        self.line = line
        self.path = path
        self.message = message
    }

    /// `file:line: path: message`, leaving out the parts that do not apply.
    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        text += ": "
        if !path.isEmpty { text += "\(path): " }
        return text + message
    }
}
