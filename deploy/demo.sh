#!/bin/sh
# The simulated side of deploy/compose.yaml: enrolls a small fleet of phones (APNs, through mock-push),
# lets each answer its pushes, and signs in every few seconds through a rotating relay replica.
set -eu
mock_ca=/var/lib/approval-relay/mock/ca.pem
accounts="alice bob carol"
cd /tmp
for name in $accounts; do
  uri=$(approval-relay backend --relay relay-1:50051 enroll "$name@example.com")
  token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  approval-relay device --keys "$name.json" enroll "$uri" --relay relay-2:50052 \
    --platform apns --push-token "$token" --app-id com.example.authenticator
  approval-relay device --keys "$name.json" listen --mock https://mock-push:8443 --ca-file "$mock_ca" \
    --auto approve --think-ms 800 &
done
i=0
while true; do
  for name in $accounts; do
    i=$((i + 1))
    replica="relay-$((i % 3 + 1)):50051"
    approval-relay backend --relay "$replica" create "$name@example.com" --mode none || true
  done
  sleep 3
done
