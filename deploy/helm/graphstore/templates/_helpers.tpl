{{/*
Names, labels, and the values every pod shares: the scheduler's address, the token and
TLS environment, sizes in bytes. Settings reach graphstore's processes only through the
GRAPHSTORE_* variables of docs/configuration.md.
*/}}

{{- define "graphstore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-graphstore, unless the release name already says graphstore. Names derived
from it add at most 10 characters ("-scheduler"), so it stops at 52. */}}
{{- define "graphstore.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "graphstore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "graphstore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "graphstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "graphstore.labels" -}}
helm.sh/chart: {{ include "graphstore.chart" . }}
{{ include "graphstore.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "graphstore.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "graphstore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "graphstore.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The scheduler Service's DNS name and the address workers and drivers dial. */}}
{{- define "graphstore.schedulerHost" -}}
{{- printf "%s-scheduler.%s.svc" (include "graphstore.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "graphstore.schedulerAddress" -}}
{{- printf "tcp://%s:%d" (include "graphstore.schedulerHost" .) (int .Values.scheduler.port) }}
{{- end }}

{{- define "graphstore.tokenSecretName" -}}
{{- default (printf "%s-token" (include "graphstore.fullname" .)) .Values.token.existingSecret }}
{{- end }}

{{/*
A byte count from an integer or a Kubernetes quantity ("1Gi", "1500M", "1.5Gi", "2e9"),
printed as a whole number; fails naming the value's key when it is neither.
Call: include "graphstore.bytes" (dict "key" "worker.objectStoreMemory" "value" $v)
*/}}
{{- define "graphstore.bytes" -}}
{{- $v := .value }}
{{- if kindIs "string" $v }}
{{- $units := dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- $number := regexFind "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]+)?" $v }}
{{- $suffix := trimPrefix $number $v }}
{{- if or (not $number) (not (hasKey $units $suffix)) }}
{{- fail (printf "%s: %q is not a size: give bytes (1073741824) or a Kubernetes quantity (1Gi, 1500Mi, 2G)" .key $v) }}
{{- end }}
{{- printf "%d" (int64 (floor (mulf (float64 $number) (get $units $suffix)))) }}
{{- else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) }}
{{- printf "%d" (int64 $v) }}
{{- else }}
{{- fail (printf "%s: %v is not a size: give bytes (1073741824) or a Kubernetes quantity (1Gi)" .key $v) }}
{{- end }}
{{- end }}

{{/* Bytes of each worker's /dev/shm: the store and its headroom. */}}
{{- define "graphstore.shmBytes" -}}
{{- $store := include "graphstore.bytes" (dict "key" "worker.objectStoreMemory" "value" .Values.worker.objectStoreMemory) | int64 }}
{{- $headroom := include "graphstore.bytes" (dict "key" "worker.shmHeadroom" "value" .Values.worker.shmHeadroom) | int64 }}
{{- add $store $headroom }}
{{- end }}

{{/* A setting's value as GRAPHSTORE_<NAME> spells it: whole numbers without an exponent
(values files make every number a float), booleans as true/false. */}}
{{- define "graphstore.settingValue" -}}
{{- $v := . }}
{{- if and (kindIs "float64" $v) (eq (float64 (int64 $v)) $v) }}
{{- printf "%d" (int64 $v) }}
{{- else }}
{{- printf "%v" $v }}
{{- end }}
{{- end }}

{{/* Where the TLS Secret is mounted, and the files in it. */}}
{{- define "graphstore.tlsDir" -}}/etc/graphstore/tls{{- end }}

{{/* Environment every graphstore process of the release shares: the token (from its
Secret, never a literal), TLS files, and the settings of .Values.settings. */}}
{{- define "graphstore.commonEnv" -}}
- name: GRAPHSTORE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "graphstore.tokenSecretName" . }}
      key: {{ .Values.token.secretKey }}
{{- if .Values.tls.enabled }}
- name: GRAPHSTORE_TLS_CERT
  value: {{ printf "%s/%s" (include "graphstore.tlsDir" .) .Values.tls.certKey | quote }}
- name: GRAPHSTORE_TLS_KEY
  value: {{ printf "%s/%s" (include "graphstore.tlsDir" .) .Values.tls.keyKey | quote }}
- name: GRAPHSTORE_TLS_CA
  value: {{ printf "%s/%s" (include "graphstore.tlsDir" .) .Values.tls.caKey | quote }}
{{- end }}
{{- range $name, $value := .Values.settings }}
- name: {{ printf "GRAPHSTORE_%s" (upper $name) }}
  value: {{ include "graphstore.settingValue" $value | quote }}
{{- end }}
{{- end }}

{{- define "graphstore.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.tls.certKey }}
        path: {{ .Values.tls.certKey }}
      - key: {{ .Values.tls.keyKey }}
        path: {{ .Values.tls.keyKey }}
      - key: {{ .Values.tls.caKey }}
        path: {{ .Values.tls.caKey }}
{{- end }}
{{- end }}

{{- define "graphstore.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ include "graphstore.tlsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Checks the schema cannot make: combinations of values. */}}
{{- define "graphstore.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.existingSecret: tls.enabled needs the name of a Secret holding the certificate, its key and the CA (keys tls.certKey, tls.keyKey, tls.caKey)" }}
{{- end }}
{{- if and .Values.dashboard.ingress.enabled (not .Values.dashboard.enabled) }}
{{- fail "dashboard.ingress.enabled: the Ingress leads to the status page, which dashboard.enabled=false turns off" }}
{{- end }}
{{- if and .Values.dashboard.enabled (eq (int .Values.dashboard.port) (int .Values.scheduler.port)) }}
{{- fail (printf "dashboard.port: %d is also scheduler.port; the status page needs a port of its own" (int .Values.dashboard.port)) }}
{{- end }}
{{- range $key := list "key" "secret" "token" "password" "aws_access_key_id" "aws_secret_access_key" "aws_session_token" }}
{{- if hasKey $.Values.worker.spill.options $key }}
{{- fail (printf "worker.spill.options.%s: credentials in values end up in plain text in the worker Deployment; put them in a Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and name it in worker.spill.credentialsSecret" $key) }}
{{- end }}
{{- end }}
{{- $limits := .Values.worker.resources.limits | default dict }}
{{- if $limits.memory }}
{{- $limit := include "graphstore.bytes" (dict "key" "worker.resources.limits.memory" "value" $limits.memory) | int64 }}
{{- $shm := include "graphstore.shmBytes" . | int64 }}
{{- if le $limit $shm }}
{{- fail (printf "worker.resources.limits.memory: %v (%d bytes) must be above the worker's shared memory, worker.objectStoreMemory + worker.shmHeadroom = %d bytes: files in a memory-backed emptyDir count against the pod's memory limit, and the worker's processes need memory too; raise the limit or lower worker.objectStoreMemory" $limits.memory $limit $shm) }}
{{- end }}
{{- end }}
{{- end }}
