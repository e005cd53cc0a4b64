import NIOCore
import NIOSSL

/// A `RedisTLSConfiguration` made ready for connections: the files read and parsed once, an
/// `NIOSSLContext` shared by every connection of a client, and the name to send and verify.
struct RedisTLSContext: Sendable {
    let configuration: RedisTLSConfiguration
    let sslContext: NIOSSLContext
    /// The SNI name and the name verified; nil for an IP address host without `serverName`, whose
    /// certificate is then verified against the address connected to.
    let serverHostname: String?

    /// The context for `configuration.tls`, or nil when it is not set. Reads the files it names;
    /// `configuration` has been validated.
    static func make(for configuration: RedisConfiguration) throws(RedisClientError) -> RedisTLSContext? {
        guard let tls = configuration.tls else { return nil }
        return try RedisTLSContext(tls, host: configuration.host)
    }

    init(_ configuration: RedisTLSConfiguration, host: String) throws(RedisClientError) {
        self.configuration = configuration
        serverHostname = configuration.serverName ?? (RedisTLSConfiguration.isIPAddress(host) ? nil : host)

        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.certificateVerification = .fullVerification
        if let caFile = configuration.caFile {
            tls.trustRoots = .certificates(try Self.certificates(in: caFile, field: "caFile"))
        }
        if let certificateFile = configuration.certificateFile, let privateKeyFile = configuration.privateKeyFile {
            let chain = try Self.certificates(in: certificateFile, field: "certificateFile")
            let keyBytes = try RedisTLSConfiguration.contents(of: privateKeyFile, field: "privateKeyFile")
            guard let key = try? NIOSSLPrivateKey(bytes: keyBytes, format: .pem) else {
                throw RedisTLSConfiguration.fileError("privateKeyFile", privateKeyFile, "holds no unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)")
            }
            tls.certificateChain = chain.map { .certificate($0) }
            tls.privateKey = .privateKey(key)
        }
        do {
            sslContext = try NIOSSLContext(configuration: tls)
        } catch {
            // With the files parsed, what is left to refuse is a key that is not the certificate's.
            var message = "RedisConfiguration.tls: no TLS context can be made from these settings"
            if let certificateFile = configuration.certificateFile, let privateKeyFile = configuration.privateKeyFile {
                message += "; is the key in \(privateKeyFile) that of the certificate in \(certificateFile)?"
            }
            throw RedisClientError(
                .invalidConfiguration, message: message, underlying: error,
                field: configuration.certificateFile == nil ? "tls" : "tls.privateKeyFile")
        }
    }

    /// The certificates of a PEM file, at least one.
    private static func certificates(in path: String, field: String) throws(RedisClientError) -> [NIOSSLCertificate] {
        let bytes = try RedisTLSConfiguration.contents(of: path, field: field)
        let certificates = (try? NIOSSLCertificate.fromPEMBytes(bytes)) ?? []
        guard !certificates.isEmpty else {
            throw RedisTLSConfiguration.fileError(field, path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        }
        return certificates
    }

    /// The handler that goes in front of the Redis handler of a new channel (on its event loop).
    func makeHandler() throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(context: sslContext, serverHostname: serverHostname)
    }

    /// A clear error for a TLS failure on a connection to `endpoint`, or nil when `error` is not one.
    ///
    /// BoringSSL reports the reason as a name in its error stack (`CERTIFICATE_VERIFY_FAILED`, an alert
    /// the server sent); the message says what it means for this configuration and what to change.
    func failure(_ error: any Error, endpoint: String) -> RedisClientError? {
        var cause = error
        if let wrapped = error as? RedisClientError {
            guard let underlying = wrapped.underlying else { return nil }
            cause = underlying
        }
        guard cause is NIOSSLError || cause is BoringSSLError || cause is NIOSSLExtraError else { return nil }
        let text = "\(cause)"
        let why: String
        if let extra = cause as? NIOSSLExtraError, extra == .failedToValidateHostname {
            let name = serverHostname.map { "the name \($0)" } ?? "the address \(endpoint)"
            why = "the server's certificate is not valid for \(name); set the TLS server name to a name the certificate carries"
        } else if text.contains("CERTIFICATE_VERIFY_FAILED") {
            let trust = configuration.caFile.map { "the CA certificates in \($0)" }
                ?? "the system's trusted roots (for a private CA, configure its CA file)"
            why = "the server's certificate is not trusted: it is not signed by \(trust), or it has expired"
        } else if text.contains("CERTIFICATE_REQUIRED") || (text.contains("HANDSHAKE_FAILURE") && configuration.certificateFile == nil) {
            why = "the server requires a client certificate and none is configured (set a certificate file and a key file)"
        } else if text.contains("UNKNOWN_CA") || text.contains("BAD_CERTIFICATE") || text.contains("CERTIFICATE_UNKNOWN") {
            why = "the server refused the client certificate\(configuration.certificateFile.map { " in \($0)" } ?? ""): is it signed by a CA the server trusts?"
        } else if text.contains("WRONG_VERSION_NUMBER") || text.contains("PACKET_LENGTH_TOO_LONG") {
            why = "the server did not answer in TLS: is the port a TLS port (tls-port), not a plain one?"
        } else {
            why = "the TLS handshake failed"
        }
        return RedisClientError(.connectFailed, message: "TLS with Redis at \(endpoint) failed: \(why)", underlying: cause)
    }
}
