#!/usr/bin/env bash
# Makes a portal vendor's signing key for sluis (RS384, 3072 bits) and its public JWKS.
#
#   docs/examples/make-key.sh KID DIR
#
# writes DIR/KID.pem (the private key: it stays with the vendor) and DIR/KID.jwks.json (the
# public key: give it to the care organisation, or publish it at your jwks_uri). Needs
# openssl and xxd.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 KID DIR" >&2
  exit 2
fi
kid=$1
dir=$2
mkdir -p "$dir"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$dir/$kid.pem" 2>/dev/null
chmod 600 "$dir/$kid.pem"
modulus=$(openssl rsa -in "$dir/$kid.pem" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
cat > "$dir/$kid.jwks.json" <<JWKS
{"keys": [{"kty": "RSA", "kid": "$kid", "use": "sig", "alg": "RS384", "e": "AQAB", "n": "$modulus"}]}
JWKS
echo "private key: $dir/$kid.pem (keep it)"
echo "public JWKS: $dir/$kid.jwks.json (register it)"
