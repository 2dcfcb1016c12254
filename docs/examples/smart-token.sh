#!/usr/bin/env bash
# Gets an access token from sluis the SMART Backend Services way: a client assertion (a JWT
# signed RS384 with the vendor's private key) traded at POST /auth/token.
#
#   docs/examples/smart-token.sh CLIENT_ID KEY.pem KID TOKEN_URL [SCOPE]
#
# TOKEN_URL is the adapter's public base URL + /auth/token (also in
# <base>/.well-known/smart-configuration). Prints the token response, JSON:
# {"access_token", "token_type", "expires_in", "scope"}. Needs openssl and curl.
set -euo pipefail
if [ $# -lt 4 ] || [ $# -gt 5 ]; then
  echo "usage: $0 CLIENT_ID KEY.pem KID TOKEN_URL [SCOPE]" >&2
  exit 2
fi
client_id=$1
key=$2
kid=$3
token_url=$4
scope=${5:-system/*.rs}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

now=$(date +%s)
jti=$(openssl rand -hex 16)
header=$(printf '{"alg":"RS384","typ":"JWT","kid":"%s"}' "$kid" | b64url)
# iss and sub: the client id; aud: the token URL; exp: at most five minutes ahead; jti: new
# every time (a jti is accepted once).
claims=$(printf '{"iss":"%s","sub":"%s","aud":"%s","iat":%d,"exp":%d,"jti":"%s"}' \
  "$client_id" "$client_id" "$token_url" "$now" $((now + 240)) "$jti" | b64url)
signature=$(printf '%s.%s' "$header" "$claims" \
  | openssl dgst -sha384 -sign "$key" -binary | b64url)

curl --silent --show-error --fail-with-body "$token_url" \
  --data-urlencode "grant_type=client_credentials" \
  --data-urlencode "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer" \
  --data-urlencode "client_assertion=$header.$claims.$signature" \
  --data-urlencode "scope=$scope"
echo
