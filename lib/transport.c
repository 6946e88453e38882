/* transport.c: the byte streams under HTTP/2, behind one small vtable:
 * plain sockets (unix or TCP) and TLS 1.3 with mutual certificate
 * authentication (OpenSSL). Sockets are non-blocking; -EAGAIN plus
 * `want_write` tells the caller what to wait for.
 *
 * Trust is decided inside the handshake (before any request is read): a
 * peer certificate passes if it chains to the configured CA, or if its
 * public-key fingerprint is pinned; expired or not-yet-valid certificates
 * never pass. Identities are P-256 keys with self-signed certificates made
 * at first start, or files the operator provides. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "rpc-internal.h"

static ssize_t plain_read(struct xport *x, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = recv(x->fd, buf, n, 0);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        x->want_write = false;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

static ssize_t plain_write(struct xport *x, const void *buf, size_t n)
{
    for (;;) {
        ssize_t r = send(x->fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        x->want_write = true;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

static int plain_handshake(struct xport *x)
{
    x->handshake_done = true;
    return 0;
}

const struct xport_ops xport_plain_ops = {
    .read = plain_read, .write = plain_write, .handshake = plain_handshake,
};

static int tls_err(struct xport *x, int r)
{
    switch (SSL_get_error(x->ssl, r)) {
    case SSL_ERROR_WANT_READ: x->want_write = false; return -EAGAIN;
    case SSL_ERROR_WANT_WRITE: x->want_write = true; return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_SYSCALL: return errno ? -errno : -ECONNRESET;
    default: {
        char b[256];
        unsigned long e = ERR_get_error();
        ERR_error_string_n(e, b, sizeof b);
        ERR_clear_error();
        if (!x->error)
            x->error = xstrdup(b);
        return -EPROTO;
    }
    }
}

static ssize_t tls_read(struct xport *x, void *buf, size_t n)
{
    int r = SSL_read(x->ssl, buf, (int)MIN(n, (size_t)INT32_MAX));
    if (r > 0)
        return r;
    return tls_err(x, r);
}

static ssize_t tls_write(struct xport *x, const void *buf, size_t n)
{
    if (n == 0)
        return 0;
    int r = SSL_write(x->ssl, buf, (int)MIN(n, (size_t)INT32_MAX));
    if (r > 0)
        return r;
    r = tls_err(x, r);
    return r == 0 ? -EPIPE : r;
}

static void cert_identity(X509 *cert, struct rpc_peer *peer);

static int tls_handshake(struct xport *x)
{
    int r = SSL_do_handshake(x->ssl);
    if (r != 1) {
        r = tls_err(x, r);
        if (r == -EAGAIN)
            return r;
        long v = SSL_get_verify_result(x->ssl);
        if (v != X509_V_OK) {
            free(x->error);
            x->error = xasprintf("certificate refused: %s", X509_verify_cert_error_string(v));
            return -EKEYREJECTED;
        }
        if (!x->error)
            x->error = xstrdup("TLS handshake failed");
        return r == 0 ? -ECONNRESET : r;
    }
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(x->ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
        x->error = xstrdup("peer did not negotiate ALPN h2");
        return -EPROTO;
    }
    X509 *cert = SSL_get1_peer_certificate(x->ssl);
    if (!cert) {
        x->error = xstrdup("peer sent no certificate");
        return -EKEYREJECTED;
    }
    cert_identity(cert, &x->peer);
    X509_free(cert);
    x->peer.kind = RPC_PEER_TLS;
    x->handshake_done = true;
    return 0;
}

const struct xport_ops xport_tls_ops = {
    .read = tls_read, .write = tls_write, .handshake = tls_handshake,
};

void xport_fill_peer(struct xport *x, bool is_unix)
{
    memset(&x->peer, 0, sizeof x->peer);
    if (is_unix) {
        struct ucred uc;
        socklen_t l = sizeof uc;
        x->peer.kind = RPC_PEER_UNIX;
        if (getsockopt(x->fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) == 0) {
            x->peer.pid = uc.pid;
            x->peer.uid = uc.uid;
            x->peer.gid = uc.gid;
        }
        return;
    }
    x->peer.kind = RPC_PEER_TCP;
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    if (getpeername(x->fd, (struct sockaddr *)&ss, &l) == 0) {
        char host[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            port = ntohs(in6->sin6_port);
        }
        snprintf(x->peer.addr, sizeof x->peer.addr, "%s:%d", host, port);
    }
}

int xport_init(struct xport *x, int fd, struct rpc_tls *tls, bool server)
{
    memset(x, 0, sizeof *x);
    x->fd = fd;
    if (!tls) {
        x->ops = &xport_plain_ops;
        return 0;
    }
    x->ops = &xport_tls_ops;
    x->ssl = SSL_new(tls->ctx);
    if (!x->ssl)
        return -ENOMEM;
    SSL_set_fd(x->ssl, fd);
    SSL_set_app_data(x->ssl, tls);
    if (server)
        SSL_set_accept_state(x->ssl);
    else
        SSL_set_connect_state(x->ssl);
    return 0;
}

void xport_close(struct xport *x)
{
    if (x->ssl) {
        if (x->handshake_done)
            SSL_shutdown(x->ssl);
        SSL_free(x->ssl);
        x->ssl = NULL;
    }
    if (x->fd >= 0)
        close(x->fd);
    x->fd = -1;
    free(x->error);
    x->error = NULL;
}

/* --- identities and fingerprints -------------------------------------- */

static int x509_fingerprint(X509 *cert, char *out, size_t len)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
    if (n <= 0)
        return -EINVAL;
    unsigned char md[32];
    unsigned mdlen = 0;
    EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    if (len < 7 + 64 + 1)
        return -ENOBUFS;
    strcpy(out, "sha256:");
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static void cert_identity(X509 *cert, struct rpc_peer *peer)
{
    x509_fingerprint(cert, peer->fingerprint, sizeof peer->fingerprint);
    X509_NAME_oneline(X509_get_subject_name(cert), peer->subject, sizeof peer->subject);
}

int rpc_tls_cert_fingerprint(const char *cert_file, char *out, size_t len)
{
    FILE *f = fopen(cert_file, "re");
    if (!f)
        return -errno;
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!cert)
        return -EBADMSG;
    int r = x509_fingerprint(cert, out, len);
    X509_free(cert);
    return r;
}

/* Verify callback: see the file comment for the policy. */
static int verify_cb(int preverify_ok, X509_STORE_CTX *sctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct rpc_tls *tls = SSL_get_app_data(ssl);
    int err = X509_STORE_CTX_get_error(sctx);
    int depth = X509_STORE_CTX_get_error_depth(sctx);

    if (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID ||
        err == X509_V_ERR_CERT_REVOKED || err == X509_V_ERR_CERT_SIGNATURE_FAILURE)
        return 0;
    /* The CA vouches: the pins are asked only when it does not, so that
     * verify_pin sees (and may log) only what would be refused. */
    if (preverify_ok && tls->have_ca && !tls->expect_fp)
        return 1;
    bool pinned = false;
    X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
    char fp[80];
    if (leaf && x509_fingerprint(leaf, fp, sizeof fp) == 0) {
        if (tls->expect_fp)
            pinned = strcmp(fp, tls->expect_fp) == 0;
        else if (tls->verify_pin)
            pinned = tls->verify_pin(fp, tls->pin_data);
    }
    /* An expected fingerprint is an exact requirement, even if a CA vouches
     * for another certificate. */
    if (tls->expect_fp && !pinned) {
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_CERT_REJECTED);
        return 0;
    }
    if (preverify_ok && tls->have_ca)
        return 1;
    if (pinned) {
        /* Trust errors are forgiven for a pinned key; the leaf's dates are
         * still checked by the store (errors above). */
        X509_STORE_CTX_set_error(sctx, X509_V_OK);
        return 1;
    }
    (void)depth;
    if (preverify_ok && !tls->have_ca) {
        /* No CA configured: only pins grant trust. */
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_CERT_UNTRUSTED);
        return 0;
    }
    return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char h2[] = { 2, 'h', '2' };
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, h2, sizeof h2, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static char *ssl_errstr(const char *what)
{
    char b[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, b, sizeof b);
    ERR_clear_error();
    return xasprintf("%s: %s", what, b);
}

int rpc_tls_new(const struct rpc_tls_config *cfg, bool server, struct rpc_tls **ret,
                char **ret_err)
{
    struct rpc_tls *t = xcalloc(1, sizeof *t);
    char *err = NULL;
    int r = -EINVAL;
    t->server = server;
    t->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!t->ctx) {
        err = ssl_errstr("SSL_CTX_new");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (!cfg->cert_file || !cfg->key_file) {
        err = xstrdup("a TLS certificate and key are required (mutual authentication)");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cfg->cert_file) != 1) {
        err = ssl_errstr(cfg->cert_file);
        r = -ENOENT;
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ctx) != 1) {
        err = ssl_errstr(cfg->key_file);
        r = -EKEYREJECTED;
        goto fail;
    }
    if (cfg->ca_file) {
        if (SSL_CTX_load_verify_locations(t->ctx, cfg->ca_file, NULL) != 1) {
            err = ssl_errstr(cfg->ca_file);
            r = -ENOENT;
            goto fail;
        }
        t->have_ca = true;
    }
    t->verify_pin = cfg->verify_pin;
    t->pin_data = cfg->pin_data;
    t->expect_fp = cfg->expect_fingerprint ? xstrdup(cfg->expect_fingerprint) : NULL;
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    if (server) {
        SSL_CTX_set_alpn_select_cb(t->ctx, alpn_select, NULL);
    } else {
        static const unsigned char h2[] = { 2, 'h', '2' };
        SSL_CTX_set_alpn_protos(t->ctx, h2, sizeof h2);
    }
    *ret = t;
    return 0;
fail:
    if (ret_err)
        *ret_err = err;
    else
        free(err);
    rpc_tls_free(t);
    return r;
}

void rpc_tls_free(struct rpc_tls *tls)
{
    if (!tls)
        return;
    SSL_CTX_free(tls->ctx);
    free(tls->expect_fp);
    free(tls);
}

int rpc_tls_make_identity(const char *cert_file, const char *key_file, const char *cn, int days)
{
    if (access(cert_file, F_OK) == 0 && access(key_file, F_OK) == 0)
        return 0;
    int r = -EIO;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;
    if (!pkey || !x)
        goto out;
    X509_set_version(x, 2);
    unsigned char serial[16];
    {
        char u[37];
        uuid_new(u);
        memcpy(serial, u, sizeof serial);
        serial[0] &= 0x7f;
        BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
        BN_free(bn);
    }
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400L);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"amber", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    if (!X509_sign(x, pkey, EVP_sha256()))
        goto out;
    int fd = open(key_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    f = fdopen(fd, "w");
    if (!f || !PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL))
        goto out;
    fclose(f);
    f = fopen(cert_file, "we");
    if (!f) {
        r = -errno;
        goto out;
    }
    if (!PEM_write_X509(f, x))
        goto out;
    r = 0;
out:
    if (f)
        fclose(f);
    X509_free(x);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return r;
}
