// Storage for the Functions runtime (host keys, timer leases, the deployment package)
// and for the gateway's tables (subscriptions, limits, breakers, usage). Entra only:
// shared keys are off, so every caller needs a data role (rbac.bicep).
param name string
param location string
param tags object
@description('Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string
@description('Replication. LRS is the cheapest; choose ZRS or GZRS to keep subscriptions through a zone or region loss.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
param skuName string = 'Standard_LRS'
@description('Enabled: reachable over the public endpoint (Entra auth only). Disabled: only through a private endpoint (main.bicep: privateNetworking). Private unless main.bicep says otherwise.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'
@description('The firewall\'s answer to traffic no rule allows: Deny when private (the default); Allow while the public endpoint serves the app (Entra auth only).')
@allowed(['Allow', 'Deny'])
param networkDefaultAction string = 'Deny'
@description('Blob container of the audit log of prompts and completions (GATEWAY_PROMPT_LOG.container).')
param promptLogContainerName string = 'promptlog'
@description('Days an audit-log blob is kept; a lifecycle rule deletes it after that.')
@minValue(1)
param promptLogRetentionDays int = 90

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206:Replication is the skuName parameter; LRS by default for the lowest cost at rest (README: deploy). Choose ZRS or GZRS to keep subscriptions through a zone or region loss
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: publicNetworkAccess
    supportsHttpsTrafficOnly: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction
    }
  }

  resource blobs 'blobServices' = {
    name: 'default'
    properties: {
      deleteRetentionPolicy: {
        enabled: true
        days: 7
      }
      containerDeleteRetentionPolicy: {
        enabled: true
        days: 7
      }
    }

    resource deployments 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }
}

// The audit log's container (shared/promptlog): one append blob per hour and instance.
resource promptLogContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: storage::blobs
  name: promptLogContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Retention of the audit log: its append blobs are deleted promptLogRetentionDays after their last write.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'promptlog-retention'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'appendBlob'
              ]
              prefixMatch: [
                '${promptLogContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: promptLogRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
