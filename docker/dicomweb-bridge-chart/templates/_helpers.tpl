{{/*
A Kaapana UI parameter: global.<name> as kube-helm passes it (--set-string global.<name>=<value>), or, when that
is missing or empty, extension_params.<name>.default. Called as (include "dwb.param" (list $ "store_url")).
*/}}
{{- define "dwb.param" -}}
{{- $ctx := index . 0 -}}{{- $name := index . 1 -}}
{{- $v := "" -}}
{{- if hasKey $ctx.Values.global $name -}}{{- $v = index $ctx.Values.global $name | toString -}}{{- end -}}
{{- if or (eq $v "") (eq $v "<nil>") -}}
{{- $p := index $ctx.Values.extension_params $name -}}
{{- $v = $p.default | default "" | toString -}}
{{- end -}}
{{- $v -}}
{{- end -}}

{{- define "dwb.namespace" -}}
{{- .Values.global.services_namespace | default "services" -}}
{{- end -}}

{{- define "dwb.image" -}}
{{- if .Values.image -}}
{{- .Values.image -}}
{{- else -}}
{{- $registry := required "global.registry_url is not set (Kaapana sets it; elsewhere pass --set global.registry_url=...)" .Values.global.registry_url -}}
{{- $tag := required "global.kaapana_build_version is not set (Kaapana sets it; elsewhere pass --set global.kaapana_build_version=...)" .Values.global.kaapana_build_version -}}
{{- printf "%s/dicomweb-bridge:%s" $registry $tag -}}
{{- end -}}
{{- end -}}

{{/* An AE title built from a parameter, refused at install time if the bridge would refuse it at start-up. */}}
{{- define "dwb.ae" -}}
{{- $ae := index . 0 -}}{{- $what := index . 1 -}}
{{- if or (eq $ae "") (gt (len $ae) 16) (not (regexMatch "^[A-Za-z0-9 ._-]+$" $ae)) -}}
{{- fail (printf "%s %q is not a valid AE title (1-16 characters: letters, digits, space, . _ -)" $what $ae) -}}
{{- end -}}
{{- $ae -}}
{{- end -}}

{{- define "dwb.labels" -}}
app.kubernetes.io/name: dicomweb-bridge
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
