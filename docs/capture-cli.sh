#!/usr/bin/env bash
# Reproduces the command output shown in docs/cli.md, on the local control
# plane with the operator running:
#   .venv/bin/kubeinfer cluster up && eval $(.venv/bin/kubeinfer cluster env)
#   kubectl apply --server-side -f crds/ && KUBEINFER_BIND_HOST=127.0.0.1 .venv/bin/kubeinfer-operator &
#   PATH=$PWD/.venv/bin:$PATH docs/capture-cli.sh
set -euo pipefail
show() { echo "\$ $*"; "$@" 2>&1 || echo "(exit status $?)"; echo; }
kubectl create namespace team-a --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl config set-context --current --namespace=team-a >/dev/null
show kubectl kubeinfer gpus
show kubectl kubeinfer preview -f examples/simulated.yaml
kubectl apply -f examples/simulated.yaml >/dev/null
kubectl wait --for=condition=Ready infsvc/demo --timeout=120s >/dev/null
sleep 20  # the routers' GPU reports reach status within GPU_REFRESH_SECONDS
show kubectl kubeinfer gpus
show kubectl kubeinfer preview --from-cluster demo --set spec.model.source=simulated/demo-8b --set spec.gpu.placement=largest-first
show kubectl kubeinfer preview --from-cluster demo --set spec.replicas=12
sed 's/replicas: 4/replicas: -1/' examples/simulated.yaml > /tmp/invalid.yaml
show kubectl kubeinfer preview -f /tmp/invalid.yaml
router=$(kubectl get pods -l app.kubernetes.io/component=router -o jsonpath='{.items[0].status.podIP}')
for _ in $(seq 1 8); do
  (for _ in $(seq 1 10); do
     curl -s -o /dev/null "http://$router:8080/v1/completions" -H 'content-type: application/json' \
       -d '{"model":"demo-model","prompt":"hello","max_tokens":400}'; done) &
done
sleep 3
show kubectl kubeinfer top --once
wait
show kubectl kubeinfer status demo
show kubectl kubeinfer gpus -o yaml --node gpu-a400-0
kubectl config set-context --current --namespace=default >/dev/null
