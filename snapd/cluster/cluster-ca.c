/* cluster-ca.c: the cluster CA and the node certificates it signs.
 *
 * `amberctl cluster init-ca` makes the CA once (its key and certificate go
 * into a Kubernetes Secret); every amberd that is given the CA key makes
 * its own node certificate at start (CN = its node name), so nodes trust
 * each other by the CA, without pairwise pins. cert-manager can issue the
 * same certificates instead (an Issuer of type CA over the same Secret); then
 * amberd gets --tls-cert/--tls-key and only the CA certificate.
 *
 * Plain OpenSSL 3, no daemon state: linked into amberd and amberctl. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "amber/util.h"
#include "snapd/cluster/cluster.h"

static char *ossl_err(const char *what)
{
    char b[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, b, sizeof b);
    ERR_clear_error();
    return xasprintf("%s%s%s", what, *b ? ": " : "", b);
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ex)
        return -EINVAL;
    int ok = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return ok ? 0 : -EINVAL;
}

static X509 *new_cert(EVP_PKEY *pkey, const char *cn, int days)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    X509_set_version(x, 2);
    unsigned char serial[16];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400L);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"amber", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    return x;
}

static int write_key(const char *path, EVP_PKEY *pkey)
{
    _cleanup_free_ char *tmp = xasprintf("%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return -errno;
    }
    int ok = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
    if (fflush(f) != 0 || fsync(fileno(f)) < 0)
        ok = 0;
    fclose(f);
    if (!ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return -EIO;
    }
    return 0;
}

static int write_certs(const char *path, X509 *a, X509 *b)
{
    _cleanup_free_ char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f)
        return -errno;
    int ok = PEM_write_X509(f, a) && (!b || PEM_write_X509(f, b));
    if (fflush(f) != 0 || fsync(fileno(f)) < 0)
        ok = 0;
    fclose(f);
    if (!ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return -EIO;
    }
    return 0;
}

int cluster_ca_make(const char *cert_file, const char *key_file, const char *cn, int days)
{
    if (access(cert_file, F_OK) == 0 || access(key_file, F_OK) == 0)
        return -EEXIST;
    int r = -EIO;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = pkey ? new_cert(pkey, cn, days) : NULL;
    if (!x)
        goto out;
    X509_set_issuer_name(x, X509_get_subject_name(x));
    if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
        add_ext(x, x, NID_subject_key_identifier, "hash") < 0)
        goto out;
    if (!X509_sign(x, pkey, EVP_sha256()))
        goto out;
    if ((r = write_key(key_file, pkey)) < 0 || (r = write_certs(cert_file, x, NULL)) < 0)
        goto out;
    r = 0;
out:
    X509_free(x);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return r;
}

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return x;
}

int cluster_ca_issue(const char *ca_cert, const char *ca_key, const char *cn, int days,
                     const char *cert_file, const char *key_file, char **ret_err)
{
    int r = -EIO;
    char *err = NULL;
    EVP_PKEY *cakey = NULL, *pkey = NULL;
    X509 *ca = read_cert(ca_cert), *x = NULL;
    FILE *f = NULL;
    _cleanup_free_ char *san = xasprintf("DNS:%s", cn);
    if (!ca) {
        err = ossl_err(ca_cert);
        r = -ENOENT;
        goto out;
    }
    if (!(f = fopen(ca_key, "re"))) {
        r = -errno;
        err = xasprintf("%s: %s", ca_key, strerror(errno));
        goto out;
    }
    cakey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!cakey || X509_check_private_key(ca, cakey) != 1) {
        err = ossl_err("the CA key does not match the CA certificate");
        r = -EKEYREJECTED;
        goto out;
    }
    pkey = EVP_EC_gen("P-256");
    if (!pkey || !(x = new_cert(pkey, cn, days))) {
        err = ossl_err("key generation");
        goto out;
    }
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    if (add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(x, ca, NID_key_usage, "critical,digitalSignature") < 0 ||
        add_ext(x, ca, NID_ext_key_usage, "serverAuth,clientAuth") < 0 ||
        add_ext(x, ca, NID_subject_alt_name, san) < 0) {
        err = ossl_err("certificate extensions");
        r = -EINVAL;
        goto out;
    }
    if (!X509_sign(x, cakey, EVP_sha256())) {
        err = ossl_err("signing");
        goto out;
    }
    if ((r = write_key(key_file, pkey)) < 0 || (r = write_certs(cert_file, x, ca)) < 0) {
        err = xasprintf("writing %s: %s", cert_file, strerror(-r));
        goto out;
    }
    r = 0;
out:
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(pkey);
    EVP_PKEY_free(cakey);
    ERR_clear_error();
    if (ret_err)
        *ret_err = err;
    else
        free(err);
    return r;
}

int cluster_ca_signed(const char *ca_cert, const char *cert_file)
{
    return cluster_ca_cert_ok(ca_cert, cert_file, NULL, 0);
}

int cluster_ca_cert_ok(const char *ca_cert, const char *cert_file, const char *cn, int min_days)
{
    X509 *ca = read_cert(ca_cert), *x = read_cert(cert_file);
    int ok = 0;
    if (ca && x && cn) {
        char got[256] = "";
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, got, sizeof got) < 0 ||
            strcmp(got, cn) != 0) {
            X509_free(x);
            x = NULL;
        }
    }
    if (ca && x && min_days > 0) {
        time_t t = time(NULL) + (time_t)min_days * 86400;
        if (X509_cmp_time(X509_get0_notAfter(x), &t) <= 0) {
            X509_free(x);
            x = NULL;
        }
    }
    if (ca && x) {
        X509_STORE *st = X509_STORE_new();
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        if (st && ctx && X509_STORE_add_cert(st, ca) == 1 &&
            X509_STORE_CTX_init(ctx, st, x, NULL) == 1)
            ok = X509_verify_cert(ctx) == 1;
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(st);
    }
    X509_free(ca);
    X509_free(x);
    ERR_clear_error();
    return ok;
}
