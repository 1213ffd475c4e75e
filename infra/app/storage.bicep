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

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:Default-deny needs a virtual network and private endpoints, and this template creates no virtual network: Flex Consumption without VNet integration and the developer's machine use the public endpoint, with Entra auth only (shared keys off)
  // checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the public endpoint stays on; every request needs an Entra token and a data role, and no blob is anonymous
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
    publicNetworkAccess: 'Enabled'
    supportsHttpsTrafficOnly: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
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

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
