/// Where a node sits in the configuration, spelled the way errors show it: `plans.free.limits[1].capacity`.
struct FieldPath: Sendable, Hashable, CustomStringConvertible {
    let description: String

    static let root = FieldPath(description: "")

    func appending(_ field: String) -> FieldPath {
        FieldPath(description: description.isEmpty ? field : "\(description).\(field)")
    }

    func appending(index: Int) -> FieldPath {
        FieldPath(description: "\(description)[\(index)]")
    }
}
